r"""Sinusoid regression (Finn et al., 2017): the runs behind chapters 3, 4 and 5.

The paper's setting: tasks :math:`y = A\sin(x - \varphi)`, :math:`A\in[0.1, 5]`, :math:`\varphi\in[0,\pi]`,
:math:`x\in[-5, 5]`; an MLP 1-40-40-1 with ReLU; K = 10 examples per task in training; MAML with one inner
step of :math:`\alpha = 0.01`; Adam with :math:`\beta = 10^{-3}`; meta-batches of 25 tasks; 70,000
iterations (the ``cpu`` and ``full`` budgets; ``quick`` trains 300 iterations, for tests).

:func:`reproduce` trains four models on the same seed — MAML, first-order MAML, Reptile and the
pre-training baseline — saves their checkpoints (about 10 kB each) under
``results/checkpoints/sinusoid/``, evaluates them on fresh 5-shot and 10-shot test tasks and writes
``results/sinusoid.json``. It also meta-trains the grid behind the meta-training explorer
(``results/sinusoid_explorer.json``). :func:`evaluate` re-evaluates the shipped checkpoints on test tasks
from any seed.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..algorithms import MetaLearner, make_learner
from ..budgets import preset, resolve_budget
from ..checkpoints import load_checkpoint
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..evaluation import AdaptationCurve, adaptation_curve
from ..models import MLP, Params
from ..results import read_results, results_dir, select, write_results
from ..tasks import SinusoidTasks
from ..training import History, meta_train
from .runs import checkpoint_file

__all__ = ["EXPERIMENT", "ARCHITECTURE", "SETTINGS", "PUBLISHED", "RunSpec", "RUNS", "TrainedModel",
           "checkpoint_path", "train", "load_models", "evaluate_models", "reproduce", "evaluate",
           "EXPLORER_GRID", "train_explorer_point", "compute_explorer", "load_explorer", "results_path",
           "explorer_path"]

EXPERIMENT = "sinusoid"
ARCHITECTURE = (1, 40, 40, 1)
#: test conditions: K support points per test task
SETTINGS = {"5-shot": 5, "10-shot": 10}
#: test-time inner steps evaluated (0..MAX_STEPS)
MAX_STEPS = 10
#: query points per test task (many, so each task's MSE is accurate)
QUERIES = 100

#: Finn et al. (2017), appendix table: 5-shot MSE after 1, 5 and 10 gradient steps.
PUBLISHED = {("MAML", "5-shot"): {1: 0.67, 5: 0.38, 10: 0.35},
             ("pre-trained", "5-shot"): {1: 2.41, 5: 2.23, 10: 2.19}}


@dataclass(frozen=True)
class RunSpec:
    """One model the experiment trains: a display name and the algorithm's settings."""

    name: str
    algorithm: str
    alpha: float
    inner_steps: int

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    def learner(self) -> MetaLearner:
        return make_learner(self.algorithm, MLP(ARCHITECTURE), alpha=self.alpha, inner_steps=self.inner_steps)


#: The four runs, all on the same training seed and task stream. Reptile adapts with 5 steps of 0.01 on all
#: 20 points of each training task (with 1 step it would be joint training, chapter 2); every model is
#: tested with the same test-time steps of α = 0.01.
RUNS = (RunSpec("MAML", "maml", 0.01, 1),
        RunSpec("FOMAML", "fomaml", 0.01, 1),
        RunSpec("Reptile", "reptile", 0.01, 5),
        RunSpec("pre-trained", "joint", 0.01, 0))
TEST_ALPHA = 0.01


def _spec(name: str) -> RunSpec:
    for spec in RUNS:
        if name.lower() in (spec.name.lower(), spec.slug):
            return spec
    raise ConfigError(f"unknown sinusoid run {name!r}: the runs are {', '.join(s.name for s in RUNS)}")


def results_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}.json"


def explorer_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}_explorer.json"


def checkpoint_path(name: str, budget: str = "cpu", seed: int = 0, root=None) -> Path:
    """``results/checkpoints/sinusoid/<run>-<budget>-seed<seed>.pt``."""
    return checkpoint_file(EXPERIMENT, _spec(name).slug, budget, seed, root)


@dataclass
class TrainedModel:
    """A trained initialisation: its learner (algorithm + model), parameters and training record."""

    name: str
    learner: MetaLearner
    params: Params
    history: History
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def ms_per_step(self) -> float:
        return self.history.ms_per_step

    def __repr__(self) -> str:
        where = f", from {self.path.name}" if self.path else ""
        return (f"TrainedModel({self.name}: {self.learner.describe()}, {self.history.steps_done} iterations, "
                f"{self.ms_per_step:.2f} ms/step{where})")


def train(names: Iterable[str] | None = None, *, budget: str | None = None, seed: int = 0, root=None,
          progress: bool = True, save: bool = True, reuse: bool = False) -> dict[str, TrainedModel]:
    """Meta-train the runs ``names`` (default: all of :data:`RUNS`) and save their checkpoints.

    With ``reuse=True`` a run whose checkpoint (same budget and seed) already exists is loaded, not retrained.
    """
    budget = resolve_budget(budget)
    family = SinusoidTasks()
    out = {}
    for spec in (RUNS if names is None else [_spec(n) for n in names]):
        if reuse and checkpoint_path(spec.name, budget, seed, root).is_file():
            out.update(load_models([spec.name], budget=budget, seed=seed, root=root))
            continue
        learner = spec.learner()
        path = checkpoint_path(spec.name, budget, seed, root) if save else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        result = meta_train(learner, family, budget=budget, seed=seed, experiment=EXPERIMENT, progress=progress,
                            checkpoint=path)
        out[spec.name] = TrainedModel(spec.name, learner, result.params, result.history, result.metadata(), path)
    return out


def load_models(names: Iterable[str] | None = None, *, budget: str = "cpu", seed: int = 0,
                root=None) -> dict[str, TrainedModel]:
    """The trained models from their checkpoints (by default the shipped ``cpu`` ones, seed 0).

    Raises :class:`~metalearn_core.errors.CheckpointError` naming the missing file and the command that
    creates it.
    """
    budget = resolve_budget(budget)
    out = {}
    for spec in (RUNS if names is None else [_spec(n) for n in names]):
        path = checkpoint_path(spec.name, budget, seed, root)
        if not path.is_file():
            raise CheckpointError(
                f"no {spec.name} checkpoint at {path} (budget {budget!r}, seed {seed}): create it with "
                f"`python -m metalearn_core reproduce sinusoid --budget {budget} --seed {seed}`")
        learner = spec.learner()
        ckpt = load_checkpoint(path, learner.model)
        saved = ckpt.metadata.get("learner", {})
        if saved.get("algorithm") != learner.name or saved.get("inner_steps") != learner.inner_steps:
            raise CheckpointError(
                f"{path} holds a {saved.get('algorithm', 'unknown')} model with {saved.get('inner_steps')} inner "
                f"step(s), not {learner.describe()}: re-create it with `python -m metalearn_core reproduce "
                f"sinusoid --budget {budget} --seed {seed}`")
        out[spec.name] = TrainedModel(spec.name, learner, ckpt.params,
                                      History.from_dict(ckpt.metadata.get("history", {})), ckpt.metadata, path)
    return out


def evaluate_models(models: dict[str, TrainedModel], *, budget: str | None = None, n_tasks: int | None = None,
                    test_seed: int = 0, settings: dict[str, int] | None = None, steps: int = MAX_STEPS,
                    alpha: float = TEST_ALPHA) -> tuple[list[dict], dict[tuple[str, str], AdaptationCurve]]:
    """Adaptation curves of every model in every setting, and the results rows they give.

    ``n_tasks`` defaults to the budget's number of test tasks (≥ 600 at ``cpu``); the test tasks come from
    the stream ``test_seed``, never the training stream. Returns ``(rows, curves)`` with ``curves`` keyed
    by ``(setting, model name)``. A test task on which a model's adaptation diverges (it happens, rarely,
    after many steps with few shots) is left out of that model's statistics and counted in the row's
    ``diverged_tasks``, rather than turning the whole table into NaN.
    """
    settings = SETTINGS if settings is None else settings
    n_tasks = n_tasks if n_tasks is not None else preset(EXPERIMENT, budget).eval_tasks
    family = SinusoidTasks()
    rows, curves = [], {}
    for setting, shots in settings.items():
        for name, m in models.items():
            curve = adaptation_curve(m.learner, m.params, family, steps=steps, shots=shots, queries=QUERIES,
                                     n_tasks=n_tasks, seed=test_seed, alpha=alpha, label=name,
                                     exclude_diverged=True)
            curves[setting, name] = curve
            published = PUBLISHED.get((name, setting), {})
            train_budget = m.metadata.get("budget", "quick")
            for s in range(steps + 1):
                mean, ci = curve.at(s)
                rows.append({"experiment": EXPERIMENT, "algorithm": name, "setting": setting, "metric": "mse",
                             "steps": s, "mean": round(mean, 6), "ci95": round(ci, 6), "n_tasks": curve.n_tasks,
                             "diverged_tasks": curve.diverged,
                             "budget": train_budget, "seed": int(m.metadata.get("seed", 0)),
                             "test_seed": test_seed, "alpha": alpha, "shots": shots,
                             "iterations": m.history.steps_done,
                             "ms_per_step": round(m.ms_per_step, 3), "train_seconds": round(m.history.seconds, 1),
                             "published": published.get(s)})
    return rows, curves


# ---- the meta-training explorer ----------------------------------------------------------------------------

#: The grid of the meta-training explorer (chapter 4): 3 algorithms × α × β × inner steps = 54 short runs.
EXPLORER_GRID = {"algorithm": ("MAML", "FOMAML", "Reptile"), "alpha": (0.001, 0.01, 0.1),
                 "outer_lr": (1e-4, 1e-3, 1e-2), "inner_steps": (1, 5)}
EXPLORER_EXPERIMENT = "sinusoid_explorer"


def train_explorer_point(algorithm: str, alpha: float, outer_lr: float, inner_steps: int, *,
                         budget: str | None = None, seed: int = 0, iterations: int | None = None,
                         callbacks: Sequence[Callable] = (), progress: bool = False,
                         eval_shots: int = 5) -> dict:
    """One short meta-training run and its 5-shot adaptation curve, as a JSON-able dict.

    If meta-training diverges, ``error`` holds the message and there is no history. If training succeeds but
    adapting the result for 10 test steps diverges on some test tasks, the history is kept and
    ``eval_error`` holds the message instead of a curve.
    """
    learner = make_learner(algorithm, MLP(ARCHITECTURE), alpha=alpha, inner_steps=inner_steps)
    family = SinusoidTasks()
    entry = {"algorithm": learner.name, "alpha": alpha, "outer_lr": outer_lr, "inner_steps": inner_steps,
             "error": None, "eval_error": None, "curve": None, "shots": eval_shots}
    try:
        result = meta_train(learner, family, budget=budget, seed=seed, experiment=EXPLORER_EXPERIMENT,
                            iterations=iterations, outer_lr=outer_lr, callbacks=callbacks, progress=progress)
    except DivergenceError as exc:
        entry["error"] = str(exc)
        return entry
    entry.update(history={"iterations": result.history.iterations,
                          "loss": [round(v, 5) for v in result.history.metrics["loss"]],
                          "loss_before": [round(v, 5) for v in result.history.metrics["loss_before"]]},
                 ms_per_step=round(result.history.ms_per_step, 3), iterations=result.history.steps_done)
    try:
        curve = adaptation_curve(learner, result.params, family, steps=MAX_STEPS, shots=eval_shots,
                                 queries=QUERIES, budget=budget, experiment=EXPLORER_EXPERIMENT, seed=seed)
    except DivergenceError as exc:
        entry["eval_error"] = str(exc)
        return entry
    entry.update(curve={"mean": [round(float(v), 5) for v in curve.mean],
                        "ci95": [round(float(v), 5) for v in curve.ci95]}, n_tasks=curve.n_tasks)
    return entry


def compute_explorer(*, budget: str | None = None, seed: int = 0, root=None, progress: bool = True) -> Path:
    """Meta-train every point of :data:`EXPLORER_GRID` and write ``results/sinusoid_explorer.json``."""
    import itertools

    from tqdm import tqdm

    budget = resolve_budget(budget)
    cfg = preset(EXPLORER_EXPERIMENT, budget)
    combos = list(itertools.product(*EXPLORER_GRID.values()))
    points = []
    for combo in tqdm(combos, desc="explorer grid", disable=not progress):
        points.append(train_explorer_point(*combo, budget=budget, seed=seed))
    doc = {"experiment": EXPLORER_EXPERIMENT, "budget": budget, "seed": seed, "iterations": cfg.iterations,
           "meta_batch": cfg.meta_batch, "eval_tasks": cfg.eval_tasks, "grid": EXPLORER_GRID, "points": points,
           "torch": torch.__version__}
    path = explorer_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    return path


def load_explorer(root=None) -> dict:
    """The explorer grid written by :func:`compute_explorer`, indexed by ``(algorithm, α, β, k)``."""
    path = explorer_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"no explorer grid at {path}: create it with "
                                f"`python -m metalearn_core reproduce sinusoid --budget cpu`")
    doc = json.loads(path.read_text())
    doc["index"] = {(p["algorithm"], p["alpha"], p["outer_lr"], p["inner_steps"]): p for p in doc["points"]}
    return doc


# ---- command-line entry points ----------------------------------------------------------------------------

def reproduce(budget: str | None = None, seed: int = 0, root=None, *, explorer: bool = True,
              progress: bool = True, reuse: bool = False, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Train the four runs, evaluate them and write ``results/sinusoid.json`` (and the explorer grid).

    Returns the paths written. Rows of other budgets and seeds already in the file are kept. With
    ``reuse=True``, runs whose checkpoints exist are evaluated without retraining.
    """
    budget = resolve_budget(budget)
    cfg = preset(EXPERIMENT, budget)
    log(f"sinusoid, budget {budget!r}: {cfg.iterations} iterations × meta-batch {cfg.meta_batch}, seed {seed}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s) on {platform.machine()}")
    models = train(budget=budget, seed=seed, root=root, progress=progress, reuse=reuse)
    for m in models.values():
        log(f"  {m!r}")
    rows, _ = evaluate_models(models, budget=budget, test_seed=0)
    paths = {"results": write_results(results_path(root), rows)}
    paths.update({f"checkpoint {n}": m.path for n, m in models.items()})
    log(table(rows))
    if explorer:
        paths["explorer"] = compute_explorer(budget=budget, seed=seed, root=root, progress=progress)
    for what, p in paths.items():
        log(f"wrote {what}: {p}")
    return paths


def evaluate(seed: int = 0, tasks: int | None = None, *, budget: str = "cpu", train_seed: int = 0, root=None,
             log: Callable[[str], None] = print) -> list[dict]:
    """Re-evaluate the checkpoints of ``budget`` / ``train_seed`` on fresh test tasks from stream ``seed``."""
    models = load_models(budget=budget, seed=train_seed, root=root)
    n = tasks if tasks is not None else preset(EXPERIMENT, budget).eval_tasks
    rows, _ = evaluate_models(models, n_tasks=n, test_seed=seed)
    log(f"sinusoid checkpoints ({budget!r} budget, training seed {train_seed}) on {n} fresh test tasks "
        f"(test seed {seed}), test-time α={TEST_ALPHA}:")
    log(table(rows))
    return rows


TABLE_TITLE = "query MSE, mean ± 95% CI over test tasks [Finn et al. 2017 in brackets]"


def _left_out_notes(rows: Sequence[dict]) -> list[str]:
    left_out = sorted({(r["algorithm"], r["setting"], r["diverged_tasks"], r["n_tasks"] + r["diverged_tasks"])
                       for r in rows if r.get("diverged_tasks")})
    return [f"† {algo}, {setting}: adaptation diverged on {bad} of {total} test tasks, which are left out of its "
            f"statistics" for algo, setting, bad, total in left_out]


def table(rows: Sequence[dict], steps: Sequence[int] = (0, 1, 5, 10), markdown: bool = False,
          digits: int = 2) -> str:
    """The reproduction table as text: query MSE mean ± 95% CI, published 5-shot values in brackets."""
    from ..results import format_table

    return "\n".join([TABLE_TITLE, format_table(rows, steps, markdown=markdown, digits=digits)]
                     + _left_out_notes(rows))


def html_table(rows: Sequence[dict], steps: Sequence[int] = (0, 1, 5, 10), digits: int = 2, caption=None):
    """The reproduction table for notebooks and the website (see :func:`table`)."""
    from .. import viz
    from ..results import table_cells

    head, lines = table_cells(rows, steps, digits=digits)
    return viz.html_table(head, lines, caption=caption or TABLE_TITLE, notes=_left_out_notes(rows), align_left=2)


def shipped_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/sinusoid.json`` for one training budget and seed (test seed 0)."""
    return select(read_results(results_path(root)), budget=budget, seed=seed, test_seed=0)
