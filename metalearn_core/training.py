r"""The one meta-training loop, shared by every algorithm.

.. code-block:: text

    for iteration in 1..N:
        batch  = family.sample(meta_batch)               # B tasks
        g, m   = learner.meta_gradient(θ, batch)         # the only algorithm-specific call
        θ      = Adam(θ, g, lr=β)                        # the outer update θ ← θ − β·(Adam direction)
        log m; stop with a clear message if the loss is NaN/inf

Seeds, budgets, progress bars, checkpoints and callbacks (for live plots) live here, once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from .algorithms import MetaLearner
from .allocator import keep_freed_memory
from .budgets import Preset, preset, resolve_budget
from .checkpoints import load_checkpoint, save_checkpoint
from .errors import BLOWUP_FACTOR, CheckpointError, ConfigError, DivergenceError, check_positive, check_positive_int
from .models import Params
from .tasks import TaskFamily, make_generator

__all__ = ["History", "TrainResult", "meta_train", "load_params", "default_device"]

Callback = Callable[[int, dict, Params], "bool | None"]


@dataclass
class History:
    """Metrics recorded every ``log_every`` iterations (means over the interval)."""

    iterations: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    steps_done: int = 0

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / max(self.steps_done, 1)

    def record(self, iteration: int, values: dict[str, float]) -> None:
        self.iterations.append(iteration)
        for k, v in values.items():
            self.metrics.setdefault(k, []).append(float(v))

    def to_dict(self) -> dict:
        return {"iterations": list(self.iterations), "metrics": {k: list(v) for k, v in self.metrics.items()},
                "seconds": self.seconds, "steps_done": self.steps_done}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d.get("iterations", [])), {k: list(v) for k, v in d.get("metrics", {}).items()},
                   float(d.get("seconds", 0.0)), int(d.get("steps_done", 0)))


@dataclass
class TrainResult:
    """The meta-trained parameters with everything needed to reproduce or evaluate them."""

    params: Params
    history: History
    learner: MetaLearner
    family: TaskFamily
    config: Preset
    budget: str
    seed: int
    trajectory: list[Params] | None = None

    def metadata(self) -> dict:
        return {"learner": self.learner.hyperparameters(), "family": repr(self.family),
                "experiment": self.family.name, "budget": self.budget, "seed": self.seed,
                "config": vars(self.config), "history": self.history.to_dict()}

    def save(self, path) -> Path:
        """Save a checkpoint (see :func:`metalearn_core.checkpoints.save_checkpoint`)."""
        return save_checkpoint(path, self.params, model=self.learner.model, metadata=self.metadata())


def meta_train(learner: MetaLearner, family: TaskFamily, *, budget: str | None = None, seed: int = 0,
               experiment: str | None = None,
               iterations: int | None = None, meta_batch: int | None = None, outer_lr: float | None = None,
               shots: int | None = None, queries: int | None = None, params: Params | None = None,
               log_every: int | None = None, callbacks: Iterable[Callback] = (), progress: bool = True,
               record_trajectory: bool = False, checkpoint: str | Path | None = None,
               device: str | torch.device | None = None, resume: str | Path | None = None,
               resume_every: float = 60.0) -> TrainResult:
    r"""Meta-train ``learner`` on tasks from ``family``; return a :class:`TrainResult`.

    Args:
        budget: ``quick | cpu | full`` (default ``$METALEARN_BUDGET`` or ``cpu``); sets ``iterations``,
            ``meta_batch``, ``outer_lr`` and ``log_every`` from :data:`metalearn_core.budgets.PRESETS`
            unless they are given explicitly.
        experiment: which preset table to use (default ``family.name``, e.g. ``"sinusoid_intro"``).
        seed: seeds both the initial parameters and the stream of training tasks.
        outer_lr: β, the learning rate of the outer Adam optimiser.
        shots, queries: examples per task in the support and query sets (family defaults).
        params: initial parameters (default ``learner.model.init(seed)``); they are copied, not modified.
        callbacks: functions ``cb(iteration, metrics, params)`` called every ``log_every`` iterations with
            the interval's mean metrics; returning ``False`` stops training early.
        progress: show a tqdm progress bar.
        record_trajectory: keep a copy of the parameters at every logged iteration (small models only).
        checkpoint: if given, save the result there at the end (see :meth:`TrainResult.save`).
        device: where to compute (default: a CUDA GPU if there is one, else the CPU). Tasks are always
            sampled on the CPU, so a seed picks the same tasks on every device.
        resume: a file for long runs. While training, the whole state (parameters, Adam's moments, the task
            stream's random state, the history and the state of every callback that has ``state_dict()`` /
            ``load_state_dict()``) is written there at a logging iteration at most every ``resume_every``
            seconds; if the file exists when training starts, training continues from it, and the result is
            the same as an uninterrupted run's. The file is removed when training finishes. A file written by
            another run (other learner, family, budget settings or seed) is refused with a clear error.

    Raises:
        DivergenceError: the meta-loss became NaN or infinite; the message names α and β.
    """
    budget = resolve_budget(budget)
    cfg = preset(experiment or family.name, budget, iterations=iterations, meta_batch=meta_batch, outer_lr=outer_lr,
                 log_every=log_every)
    check_positive_int("iterations", cfg.iterations)
    check_positive_int("meta_batch", cfg.meta_batch)
    check_positive_int("log_every", cfg.log_every)
    beta = check_positive("outer learning rate β (outer_lr)", cfg.outer_lr, hint="e.g. outer_lr=1e-3")
    learner.model.check_family(family)
    keep_freed_memory()                  # no page faults for every step's activations (see allocator)

    generator = make_generator(seed)
    if params is None:
        params = learner.model.init(seed)
    else:
        learner.model.check_params(params, "the initial params")
    device = default_device() if device is None else torch.device(device)
    params = {k: v.detach().clone().to(device) for k, v in params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=beta)

    history = History()
    trajectory = [_snapshot(params)] if record_trajectory else None
    sums: dict[str, float] = {}
    count = 0
    callbacks = list(callbacks)
    first = 1
    fingerprint = {"learner": learner.describe(), "family": repr(family), "seed": seed, "shots": shots,
                   "queries": queries, "parameters": {k: list(v.shape) for k, v in params.items()},
                   "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}}
    resume = None if resume is None else Path(resume)
    if resume is not None and record_trajectory:
        raise ConfigError("record_trajectory=True keeps every snapshot in memory, which a resume file does not "
                          "hold: use one or the other")
    if resume is not None and resume.is_file():
        first = _load_resume(resume, fingerprint, params, opt, generator, history, callbacks) + 1
    bar = tqdm(total=cfg.iterations, initial=first - 1, desc=learner.name, disable=not progress, leave=False,
               mininterval=0.5)
    start = time.perf_counter() - history.seconds
    last_save = time.perf_counter()
    try:
        for it in range(first, cfg.iterations + 1):
            batch = family.sample(cfg.meta_batch, shots=shots, queries=queries, generator=generator).to(device)
            grads, metrics = learner.meta_gradient(params, batch)
            values = {k: float(v) for k, v in metrics.items()}
            if not all(math.isfinite(v) for v in values.values()):
                _diverged(learner, beta, it, values)
            if values["loss"] > BLOWUP_FACTOR * max(values.get("loss_before", math.inf), 1e-12):
                _diverged(learner, beta, it, values, inner=True)
            for k, p in params.items():
                p.grad = grads[k].detach()
            opt.step()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            if it % cfg.log_every == 0 or it == cfg.iterations:
                means = {k: v / count for k, v in sums.items()}
                history.record(it, means)
                history.seconds, history.steps_done = time.perf_counter() - start, it
                sums, count = {}, 0
                bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
                if trajectory is not None:
                    trajectory.append(_snapshot(params))
                if any(cb(it, means, params) is False for cb in callbacks):
                    break
                if resume is not None and time.perf_counter() - last_save >= resume_every and it < cfg.iterations:
                    _save_resume(resume, fingerprint, it, params, opt, generator, history, callbacks)
                    last_save = time.perf_counter()
    finally:
        bar.close()
        for p in params.values():
            p.grad = None
    if resume is not None and resume.is_file():
        resume.unlink()
    history.seconds = time.perf_counter() - start
    history.steps_done = history.iterations[-1] if history.iterations else 0
    result = TrainResult(_snapshot(params), history, learner, family, cfg, budget,
                         seed, trajectory)
    if checkpoint is not None:
        result.save(checkpoint)
    return result


def _save_resume(path: Path, fingerprint: dict, iteration: int, params: Params, opt, generator, history: History,
                 callbacks) -> None:
    state = {"format": "metalearn-resume-1", "fingerprint": fingerprint, "iteration": iteration,
             "params": _snapshot(params), "optimizer": opt.state_dict(), "generator": generator.get_state(),
             "history": history.to_dict(),
             "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)                    # never a half-written file, even if the run is killed while saving


def _load_resume(path: Path, fingerprint: dict, params: Params, opt, generator, history: History,
                 callbacks) -> int:
    """Restore a run from ``path`` in place; return the last iteration it had done."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"cannot read the resume file {path} ({type(exc).__name__}); delete it to start "
                              f"the run again from the beginning") from None
    if not isinstance(state, dict) or state.get("format") != "metalearn-resume-1":
        raise CheckpointError(f"{path} is not a resume file of meta_train; delete it or pass another resume=")
    if state["fingerprint"] != fingerprint:
        diff = [k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k]]
        raise CheckpointError(f"the resume file {path} belongs to another run (its {', '.join(diff)} differ); "
                              f"delete it to start this run from the beginning, or pass another resume=")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state["params"][k].to(p.device))
    opt.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    saved = History.from_dict(state["history"])
    history.iterations, history.metrics = saved.iterations, saved.metrics
    history.seconds, history.steps_done = saved.seconds, saved.steps_done
    for cb, cb_state in zip(callbacks, state["callbacks"]):
        if cb_state is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(cb_state)
    return int(state["iteration"])


def _snapshot(params: Params) -> Params:
    """A detached CPU copy of ``params`` (results and trajectories live on the CPU whatever the device)."""
    return {k: v.detach().cpu().clone() for k, v in params.items()}


def default_device() -> torch.device:
    """A CUDA GPU when one is available (e.g. on Colab, for the ``full`` budget), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _diverged(learner: MetaLearner, beta: float, it: int, values: dict, inner: bool = False) -> None:
    if inner:
        raise DivergenceError(
            f"the inner loop diverges at iteration {it}: after adaptation the loss is {values['loss']:.3g}, "
            f"{values['loss'] / max(values['loss_before'], 1e-12):.2g}× the loss before ({values['loss_before']:.3g}), "
            f"with {learner.describe()} and outer learning rate β={beta:g}: lower the inner learning rate "
            f"α={learner.alpha:g}")
    bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
    raise DivergenceError(
        f"meta-training diverged at iteration {it} ({bad}) with {learner.describe()} and outer learning "
        f"rate β={beta:g}: lower the inner learning rate α={learner.alpha:g} or β (outer_lr) and try again")


def load_params(path, learner: MetaLearner) -> tuple[Params, History]:
    """Parameters and training history from a checkpoint saved by :meth:`TrainResult.save`."""
    ckpt = load_checkpoint(path, learner.model)
    return ckpt.params, History.from_dict(ckpt.metadata.get("history", {}))
