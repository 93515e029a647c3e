r"""Few-shot classification on Omniglot, and Lake et al.'s 20 one-shot runs: the runs behind chapter 7.

What is trained (:data:`RUNS`, ten networks), each as its paper ran it and all through the one training loop
(:func:`~metalearn_core.training.meta_train`), on N-way episodes of the two minimal background sets with 90°
rotations as new classes:

* MAML and first-order MAML, one network per test setting: 5-way 1-shot, 5-way 5-shot (trained on 5-shot
  episodes) and 20-way 1-shot, with as many training queries per class as shots (MAML's code);
* Reptile with 10 training shots, inner mini-batches and 50 test steps: a 5-way network (tested 1- and 5-shot)
  and a 20-way one;
* Prototypical Networks trained on 60-way episodes: one network for the 1-shot tests, one for the 5-shot test.

The networks tested only inside the one-shot runs train on every background alphabet but the validation one
(220 characters, :data:`~metalearn_core.omniglot.SPLITS_RUNS`); those that take the 5-shot test train on 161,
leaving Sanskrit and Tagalog out. Every run checks its accuracy on the validation alphabet (Early Aramaic) about
twelve times and keeps its best checkpoint (:class:`ValidationCheck`); an interrupted run resumes. The network is
:class:`~metalearn_core.models.Conv4` with 64 filters; iterations and meta-batches come from the budget presets
named in each :class:`RunSpec`.

Evaluation (:func:`evaluate_models`): 1-shot episodes drawn inside the 20 one-shot runs (10 evaluation alphabets,
the interval over alphabets), 5-shot episodes within the two held-out background alphabets; every method of a
setting on the same episodes, so :func:`paired_differences` compares them episode by episode; both BatchNorm
protocols where a table reads them. Rows go to ``results/omniglot.json``; :func:`oneshot_rows` scores the 20-way
networks on the runs themselves (``results/oneshot.json``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..algorithms import MetaLearner, ProtoNet, make_learner
from ..budgets import preset, resolve_budget
from ..checkpoints import load_checkpoint, save_checkpoint
from ..data import OmniglotImages, load_omniglot, load_oneshot_runs, score_oneshot
from ..errors import CheckpointError, ConfigError, check_positive_int
from ..evaluation import AdaptationCurve, adaptation_curve, mean_ci95, mean_ci95_by_group
from ..models import Conv4
from ..omniglot import (RUN_ALPHABETS, SPLITS, SPLITS_RUNS, TEST_ALPHABETS, VAL_ALPHABETS, OmniglotTasks,
                        OneShotRunTasks, cross_entropy_loss)
from ..results import read_results, results_dir, select, text_table, write_results
from ..training import History, meta_train
from .runs import SpecModel, checkpoint_file, select_runs

__all__ = ["EXPERIMENT", "SETTINGS", "PUBLISHED", "ONESHOT_PUBLISHED", "RunSpec", "RUNS", "TrainedModel",
           "checkpoint_path", "results_path", "oneshot_path", "train", "load_models", "evaluate_models",
           "oneshot_rows", "predict_episode", "misclassified", "reproduce", "evaluate", "reproduce_oneshot",
           "evaluate_oneshot", "PUBLISHED_PROTOCOL", "table", "html_table", "oneshot_table", "oneshot_html_table",
           "shipped_rows", "shipped_oneshot_rows", "TRAIN_QUERIES", "EVAL_QUERIES", "resume_path", "test_family",
           "shown_steps",
           "ValidationCheck", "paired_differences", "paired_rows", "paired_html_table", "PAIRS", "PAIRED",
           "pair_result_rows", "pairs_table", "shipped_pairs", "TARGETS", "targets_rows", "targets_html_table",
           "full_budget_hours"]

EXPERIMENT = "omniglot"
ONESHOT = "oneshot"
#: test settings: name -> (N ways, K shots)
SETTINGS = {"5-way 1-shot": (5, 1), "5-way 5-shot": (5, 5), "20-way 1-shot": (20, 1)}
#: query drawings per class in meta-training episodes (each class has 20 drawings; K + Q ≤ 20)
TRAIN_QUERIES = 5
#: query drawings per class in test episodes
EVAL_QUERIES = 15

#: Published test accuracies (%) on Omniglot (Vinyals et al.'s split: 1,200 training characters drawn from all 50
#: alphabets, with rotations; 64-filter networks), keyed by (method, setting, protocol): Finn et al. 2017 (MAML, first-order MAML; their code feeds all
#: queries of an episode together, transductive), Nichol et al. 2018 (Reptile, both protocols), Snell et al.
#: 2017 (Prototypical Networks; their code normalises with running averages at test time, so no query influences
#: another: non-transductive).
PUBLISHED = {
    ("MAML", "5-way 1-shot", "transductive"): 98.7, ("MAML", "5-way 5-shot", "transductive"): 99.9,
    ("MAML", "20-way 1-shot", "transductive"): 95.8,
    ("FOMAML", "5-way 1-shot", "transductive"): 98.3, ("FOMAML", "5-way 5-shot", "transductive"): 99.2,
    ("FOMAML", "20-way 1-shot", "transductive"): 89.4,
    ("Reptile", "5-way 1-shot", "transductive"): 97.68, ("Reptile", "5-way 5-shot", "transductive"): 99.48,
    ("Reptile", "20-way 1-shot", "transductive"): 89.43,
    ("Reptile", "5-way 1-shot", "non-transductive"): 95.39, ("Reptile", "5-way 5-shot", "non-transductive"): 98.90,
    ("Reptile", "20-way 1-shot", "non-transductive"): 88.14,
    ("ProtoNet", "5-way 1-shot", "non-transductive"): 98.8, ("ProtoNet", "5-way 5-shot", "non-transductive"): 99.7,
    ("ProtoNet", "20-way 1-shot", "non-transductive"): 96.0,
}

#: How each paper predicted its queries (see :data:`PUBLISHED`); Reptile reported both.
PUBLISHED_PROTOCOL = {"MAML": "transductive", "FOMAML": "transductive", "Reptile": "both",
                      "ProtoNet": "non-transductive"}

#: Lake, Salakhutdinov & Tenenbaum (2015): error (%) on the 20 official 20-way one-shot runs.
ONESHOT_PUBLISHED = {
    "people": "4.5",
    "Bayesian program learning (BPL)": "3.3",
    "BPL, minimal background sets (1 / 2)": "4.3 / 4.0",
    "Siamese convnet (full background set)": "8.0",
    "convnet": "13.5",
    "convnet, minimal background sets (1 / 2)": "24.0 / 22.3",
    "Hausdorff distance": "38.8",
}


@dataclass(frozen=True)
class RunSpec:
    """One network the experiment trains, with its paper's protocol.

    Attributes:
        method: ``"MAML"``, ``"FOMAML"``, ``"Reptile"`` or ``"ProtoNet"`` (the name in the tables).
        algorithm: the learner's registry name (:func:`~metalearn_core.algorithms.make_learner`).
        ways: N of the training episodes (and of the network's head, for the gradient-based methods).
        shots: support drawings per class in training episodes (Reptile: all its drawings, it has no query).
        alpha: inner learning rate α (training and test).
        inner_steps: inner steps in meta-training, as in the papers; a budget preset can lower it for MAML
            and first-order MAML (``Preset.inner_steps``).
        test_steps: inner steps at test time.
        settings: the test settings (keys of :data:`SETTINGS`) this network is evaluated in.
        experiment: the preset table of its budgets.
        budget_steps: whether ``Preset.inner_steps`` applies (MAML, FOMAML at 20-way).
        inner_batch: Reptile's inner mini-batch (``None``: full batch).
        label: the run's name when the method and ways alone do not tell it apart.
        train_queries: query drawings per class in training episodes (MAML's code: as many as the shots; Reptile
            has no query set and counts its one among ``shots``).
        all_background: train on every background alphabet but the validation one (220 characters,
            :data:`~metalearn_core.omniglot.SPLITS_RUNS`) instead of the 161 of the training split: for networks
            tested only inside the one-shot runs, whose alphabets no background character touches.
        departures: how this run departs from its paper at the ``cpu`` budget (beyond the training length,
            which every table states), for the tables' "differs from the paper" column.
    """

    method: str
    algorithm: str
    ways: int
    shots: int
    alpha: float
    inner_steps: int
    test_steps: int
    settings: tuple[str, ...]
    experiment: str
    budget_steps: bool = False
    inner_batch: int | None = None
    label: str | None = None
    departures: str = ""
    train_queries: int = TRAIN_QUERIES
    all_background: bool = False

    @property
    def name(self) -> str:
        return self.label or (self.method if self.algorithm == "protonet" else f"{self.method} {self.ways}-way")

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    @property
    def queries(self) -> int:
        """Query drawings per class in training episodes (Reptile: 1, counted among its ``shots``)."""
        return 1 if self.algorithm == "reptile" else self.train_queries

    @property
    def splits(self) -> dict[str, tuple[str, ...]]:
        """The alphabet split it trains and validates on (see ``all_background``)."""
        return SPLITS_RUNS if self.all_background else SPLITS

    @property
    def train_alphabets(self) -> tuple[str, ...]:
        return self.splits["train"]

    @property
    def held_out(self) -> tuple[str, ...]:
        """Background alphabets it must never have seen: validation, and the 5-shot test alphabets unless it
        trained on them."""
        return VAL_ALPHABETS + (() if self.all_background else TEST_ALPHABETS)

    def train_steps(self, budget: str | None) -> int:
        cap = preset(self.experiment, budget).inner_steps
        return min(self.inner_steps, cap) if (self.budget_steps and cap is not None) else self.inner_steps

    def model(self, budget: str | None) -> Conv4:
        width = preset(self.experiment, budget).width
        return Conv4(ways=None if self.algorithm == "protonet" else self.ways, width=width)

    def learner(self, budget: str | None, ways: int | None = None, model: Conv4 | None = None) -> MetaLearner:
        """The learner for training (``ways=None``) or for N-way test episodes (ProtoNet only may change N)."""
        model = self.model(budget) if model is None else model
        if self.algorithm == "protonet":
            return ProtoNet(model, ways=ways or self.ways)
        if ways is not None and ways != self.ways:
            raise ConfigError(f"{self.name} has a {self.ways}-way head and cannot classify {ways}-way episodes")
        extra = {} if self.inner_batch is None else {"inner_batch": self.inner_batch}
        return make_learner(self.algorithm, model, alpha=self.alpha, inner_steps=self.train_steps(budget),
                            loss=cross_entropy_loss, **extra)


_1 = ("5-way 1-shot",)
_5 = ("5-way 5-shot",)
_20 = ("20-way 1-shot",)
#: The ten networks. MAML and first-order MAML as Finn et al. (5-way α=0.4, 1 step in training, 3 at test,
#: one network per number of shots, as many training queries as shots; 20-way α=0.1, 5 steps). Reptile as Nichol
#: et al. (10 training shots, inner mini-batches, 50 test steps; one network serves 1 and 5 shots), with plain
#: gradient steps α=0.1 where they used Adam in the inner loop. Prototypical Networks as Snell et al. (60-way
#: 1-shot episodes). The MAML, first-order MAML and ProtoNet networks tested 1-shot train on all 220 characters
#: outside validation (they are tested inside the one-shot runs only); the others on 161, keeping Sanskrit and
#: Tagalog for the 5-shot test (a second ProtoNet, trained as the first, tests 5-shot). Reptile's 20-way network
#: trains on 161 too: it is the shipped one of an earlier, shorter run.
RUNS = (
    RunSpec("MAML", "maml", 5, 1, 0.4, 1, 3, _1, "omniglot", departures="meta-batch 8 (32)", train_queries=1,
            all_background=True),
    RunSpec("MAML", "maml", 5, 5, 0.4, 1, 3, _5, "omniglot_5shot", label="MAML 5-way 5-shot",
            departures="meta-batch 8 (32)"),
    RunSpec("MAML", "maml", 20, 1, 0.1, 5, 5, _20, "omniglot_20way", budget_steps=True,
            departures="1 training step (5), meta-batch 4 (16)", train_queries=1, all_background=True),
    RunSpec("FOMAML", "fomaml", 5, 1, 0.4, 1, 3, _1, "omniglot", departures="meta-batch 8 (32)", train_queries=1,
            all_background=True),
    RunSpec("FOMAML", "fomaml", 5, 5, 0.4, 1, 3, _5, "omniglot_5shot", label="FOMAML 5-way 5-shot",
            departures="meta-batch 8 (32)"),
    RunSpec("FOMAML", "fomaml", 20, 1, 0.1, 5, 5, _20, "omniglot_20way", budget_steps=True,
            departures="1 training step (5), meta-batch 4 (16)", train_queries=1, all_background=True),
    RunSpec("Reptile", "reptile", 5, 10, 0.1, 5, 50, _1 + _5, "omniglot_reptile", inner_batch=10,
            departures="inner SGD, α=0.1 (Adam); outer Adam (SGD)"),
    RunSpec("Reptile", "reptile", 20, 10, 0.1, 10, 50, _20, "omniglot_reptile20", inner_batch=20,
            departures="inner SGD, α=0.1 (Adam); outer Adam (SGD); full-batch test steps (batches of 10)"),
    RunSpec("ProtoNet", "protonet", 60, 1, 0.01, 0, 0, _1 + _20, "omniglot_protonet", all_background=True),
    RunSpec("ProtoNet", "protonet", 60, 1, 0.01, 0, 0, _5, "omniglot_protonet_5shot", label="ProtoNet 5-shot test",
            departures="a 1-shot network (one trained on 5-shot episodes)"),
)
METHODS = ("MAML", "FOMAML", "Reptile", "ProtoNet")


def _specs(names: Iterable[str] | None) -> list[RunSpec]:
    """Runs by name (``"MAML 5-way"``, slug ``maml-5-way``) or by method (``"MAML"``: all of its networks; but
    ``"ProtoNet"`` is the name of one)."""
    return select_runs(RUNS, names, lambda s: (s.name.lower(), s.slug, s.method.lower()), what="Omniglot run",
                       own=lambda s: (s.name.lower(), s.slug),
                       listing=f"{', '.join(s.name for s in RUNS)} (or a method: {', '.join(METHODS)})")


def results_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}.json"


def oneshot_path(root=None) -> Path:
    return results_dir(root) / f"{ONESHOT}.json"


def _spec(name: str) -> RunSpec:
    key = str(name).strip().lower()
    for spec in RUNS:
        if key in (spec.name.lower(), spec.slug):
            return spec
    raise ConfigError(f"unknown Omniglot run {name!r}: the runs are {', '.join(s.name for s in RUNS)}")


def checkpoint_path(name: str, budget: str = "cpu", seed: int = 0, root=None) -> Path:
    """``results/checkpoints/omniglot/<run>-<budget>-seed<seed>.pt`` (``name`` e.g. ``"MAML 5-way"``)."""
    return checkpoint_file(EXPERIMENT, _spec(name).slug, budget, seed, root)


def resume_path(name: str, budget: str = "cpu", seed: int = 0, root=None) -> Path:
    """Where an interrupted training run of ``name`` keeps its state (see ``meta_train(resume=...)``)."""
    path = checkpoint_path(name, budget, seed, root)
    return path.with_name(path.stem + ".resume")


class TrainedModel(SpecModel):
    """A trained network: its run (``spec``, a :class:`RunSpec`), learner, parameters, training record and
    validation curve.

    ``validation`` holds ``{"iterations": [...], "minutes": [...], "accuracy": [...], "ci95": [...],
    "best_iteration": i}`` (percent), the accuracy on episodes of the validation alphabet measured while it
    trained, after the run's test-time steps; the parameters are those of ``best_iteration``.
    """

    @property
    def validation(self) -> dict:
        return self.metadata.get("validation", {"iterations": [], "accuracy": [], "ci95": []})

    def learner_for(self, ways: int) -> MetaLearner:
        """The learner that classifies ``ways``-way episodes with this network."""
        return self.spec.learner(self.metadata.get("budget"), ways=ways, model=self.learner.model)

    def __repr__(self) -> str:
        where = f", from {self.path.name}" if self.path else ""
        best = self.validation.get("best_iteration")
        kept = f", kept iteration {best}" if best is not None else ""
        return (f"TrainedModel({self.name}: {self.learner.describe()}, width {self.learner.model.width}, "
                f"{self.history.steps_done} iterations in {self.history.seconds / 60:.1f} min{kept}, "
                f"{self.ms_per_step:.0f} ms/step{where})")


def shown_steps(final: int) -> list[int]:
    """The test-time step counts the tables and figures read: 0, 1 and the run's last, plus 5 and 10 when it
    takes more than 10 (Reptile's 50); evaluation measures only these."""
    return sorted({0, min(1, final), final} | ({5, 10} if final > 10 else set()))


def _images(data_dir=None) -> OmniglotImages:
    return load_omniglot(data_dir=data_dir)


class ValidationCheck:
    """A training callback: accuracy on validation episodes every ``every`` iterations, keeping the best
    parameters (the checkpoint a run ships is the one that did best on validation, never on test).

    The episodes are the same at every check (a fixed stream), so the curve moves only with the network.
    Has ``state_dict()`` / ``load_state_dict()``, so an interrupted run resumes with its curve and best so far.
    """

    def __init__(self, spec: RunSpec, learner: MetaLearner, images: OmniglotImages, budget: str, every: int,
                 last: int, episodes: int):
        self.spec, self.every, self.last, self.episodes = spec, every, last, episodes
        shots = SETTINGS[spec.settings[0]][1]
        ways = SETTINGS[spec.settings[0]][0]
        self.shots = shots
        self.family = OmniglotTasks(images, "val", ways=ways, splits=spec.splits)
        self.learner = spec.learner(budget, ways=ways if spec.algorithm == "protonet" else None,
                                    model=learner.model)
        self.record = {"iterations": [], "minutes": [], "accuracy": [], "ci95": [], "best_iteration": None,
                       "ways": ways, "shots": shots, "episodes": episodes, "by_step": []}
        # by_step: at every check, the accuracy after each test step measured ({"0": .., "1": .., "3": ..})
        self.best = None
        self.best_accuracy = -1.0
        self.start = time.perf_counter()
        self.offset_minutes = 0.0

    def __call__(self, iteration, metrics, params):
        if iteration % self.every and iteration != self.last:
            return None
        curve = adaptation_curve(self.learner, params, self.family, steps=self.spec.test_steps, shots=self.shots,
                                 queries=TRAIN_QUERIES, n_tasks=self.episodes, seed=10_000,
                                 exclude_diverged=True, record=shown_steps(self.spec.test_steps))
        mean, ci = curve.at(self.spec.test_steps)
        minutes = self.offset_minutes + (time.perf_counter() - self.start) / 60
        self.record["iterations"].append(iteration)
        self.record["minutes"].append(round(minutes, 3))
        self.record["accuracy"].append(round(100 * mean, 3))
        self.record["ci95"].append(round(100 * ci, 3))
        by_step = {str(int(s)): round(100 * curve.at(s)[0], 2) for s in curve.steps}    # str keys: as saved
        self.record.setdefault("by_step", []).append(by_step)
        if mean > self.best_accuracy:
            self.best_accuracy = mean
            self.best = {k: v.detach().cpu().clone() for k, v in params.items()}
            self.record["best_iteration"] = iteration
        return None

    def state_dict(self) -> dict:
        return {"record": self.record, "best": self.best, "best_accuracy": self.best_accuracy,
                "minutes": self.offset_minutes + (time.perf_counter() - self.start) / 60}

    def load_state_dict(self, state: dict) -> None:
        self.record, self.best, self.best_accuracy = state["record"], state["best"], state["best_accuracy"]
        self.offset_minutes, self.start = state["minutes"], time.perf_counter()


def _train_in_worker(name: str, budget: str, seed: int, root, data_dir) -> str:
    """One network in a worker process of :func:`train` (``jobs > 1``), on one thread."""
    torch.set_num_threads(1)
    train([name], budget=budget, seed=seed, root=root, data_dir=data_dir, progress=False,
          log=lambda line: print(line, flush=True))
    return name


def train(names: Iterable[str] | None = None, *, budget: str | None = None, seed: int = 0, root=None,
          data_dir=None, progress: bool = True, save: bool = True, reuse: bool = False, jobs: int = 1,
          log: Callable[[str], None] = print) -> dict[str, TrainedModel]:
    """Meta-train the runs ``names`` (default: all of :data:`RUNS`) and save their checkpoints.

    Every run checks its accuracy on validation episodes (the validation alphabet, in its headline setting)
    about twelve times while it trains and keeps the parameters that did best there; the curve is saved in the
    checkpoint. An interrupted run resumes from its last saved state (``<checkpoint>.resume``, written about
    every minute) when this is called again. With ``reuse=True`` a run whose checkpoint (same budget and seed)
    already exists is loaded, not retrained. ``jobs > 1`` trains that many networks at a time, each in its own
    process on one thread (how the shipped ``cpu`` networks were trained, two at a time: on a CPU, small
    convolutions use one core each better than two; a network trained on one thread is the same whichever
    process trains it).
    """
    budget = resolve_budget(budget)
    specs = _specs(names)
    jobs = check_positive_int("jobs", jobs)
    if jobs > 1 and save and len(specs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        todo = [s.name for s in specs if not (reuse and checkpoint_path(s.name, budget, seed, root).is_file())]
        log(f"  training {len(todo)} network(s), {jobs} at a time, one thread each")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in pool.map(_train_in_worker, todo, [budget] * len(todo), [seed] * len(todo),
                                 [root] * len(todo), [data_dir] * len(todo)):
                log(f"  {done}: trained")
        return load_models([s.name for s in specs], budget=budget, seed=seed, root=root)
    images = _images(data_dir)
    out = {}
    for spec in specs:
        path = checkpoint_path(spec.name, budget, seed, root)
        if reuse and path.is_file():
            out.update(load_models([spec.name], budget=budget, seed=seed, root=root))
            continue
        cfg = preset(spec.experiment, budget)
        learner = spec.learner(budget)
        family = OmniglotTasks(images, "train", ways=spec.ways, rotations=True, splits=spec.splits)
        every = max(1, cfg.iterations // 12)
        every = max(cfg.log_every, every - every % cfg.log_every)
        episodes = cfg.val_tasks if cfg.val_tasks is not None else max(20, cfg.eval_tasks // 6)
        val = ValidationCheck(spec, learner, images, budget, every, cfg.iterations, episodes)
        resume = resume_path(spec.name, budget, seed, root) if save else None
        again = " (resuming)" if resume is not None and resume.is_file() else ""
        log(f"  {spec.name}{again}: {learner.describe()}, Conv4 width {cfg.width}, {cfg.iterations} iterations × "
            f"{cfg.meta_batch} episodes of {spec.ways}-way {spec.shots}-shot from {family.n_characters} characters")
        result = meta_train(learner, family, budget=budget, seed=seed, experiment=spec.experiment,
                            shots=spec.shots - (1 if spec.algorithm == "reptile" else 0), queries=spec.queries,
                            callbacks=[val], progress=progress, resume=resume)
        params = val.best if val.best is not None else result.params
        metadata = dict(result.metadata(), run=spec.name, method=spec.method, ways=spec.ways, shots=spec.shots,
                        test_steps=spec.test_steps, meta_batch=cfg.meta_batch, validation=val.record,
                        width=cfg.width, train_characters=family.n_characters)
        if save:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, params, model=learner.model, metadata=metadata)
        out[spec.name] = TrainedModel(spec, learner, params, result.history, metadata, path if save else None)
    return out


def load_models(names: Iterable[str] | None = None, *, budget: str = "cpu", seed: int = 0,
                root=None) -> dict[str, TrainedModel]:
    """The trained networks from their checkpoints (by default the shipped ``cpu`` ones, seed 0).

    Raises :class:`~metalearn_core.errors.CheckpointError` naming the missing file and the command that
    creates it, or saying what the file holds when it is another run's.
    """
    budget = resolve_budget(budget)
    out = {}
    for spec in _specs(names):
        path = checkpoint_path(spec.name, budget, seed, root)
        if not path.is_file():
            raise CheckpointError(
                f"no {spec.name} checkpoint at {path} (budget {budget!r}, seed {seed}): create it with "
                f"`python -m metalearn_core reproduce omniglot --budget {budget} --seed {seed}`")
        learner = spec.learner(budget)
        ckpt = load_checkpoint(path, learner.model)
        saved = ckpt.metadata.get("learner", {})
        redo = f"re-create it with `python -m metalearn_core reproduce omniglot --budget {budget} --seed {seed}`"
        if (saved.get("algorithm") != learner.name or ckpt.metadata.get("ways") != spec.ways
                or ckpt.metadata.get("shots") != spec.shots):
            raise CheckpointError(
                f"{path} holds a {saved.get('algorithm', 'unknown')} {ckpt.metadata.get('ways')}-way "
                f"{ckpt.metadata.get('shots')}-shot network, not {spec.name}: {redo}")
        trained_on = str(ckpt.metadata.get("family", ""))
        leaked = [a for a in spec.held_out if a in trained_on]
        if leaked or not all(a in trained_on for a in spec.train_alphabets):
            raise CheckpointError(
                f"{path} was trained on other alphabets ({trained_on or 'not recorded'}) than {spec.name}'s "
                f"({', '.join(spec.train_alphabets)})"
                + (f", including the held-out {', '.join(leaked)}, so testing it would not be a test" if leaked
                   else "") + f": {redo}")
        out[spec.name] = TrainedModel(spec, learner, ckpt.params,
                                      History.from_dict(ckpt.metadata.get("history", {})), ckpt.metadata, path)
    return out


def test_family(setting: str, images: OmniglotImages | None = None, runs=None):
    """The test episodes of ``setting``: inside the 20 one-shot runs (10 evaluation alphabets) for 1-shot,
    within one of the two held-out background alphabets (Sanskrit, Tagalog) for 5-shot, which the runs cannot
    give (each of their characters has only two drawings)."""
    ways, shots = SETTINGS[setting]
    if shots == 1:
        return OneShotRunTasks(load_oneshot_runs() if runs is None else runs, ways=ways)
    return OmniglotTasks(_images() if images is None else images, "test", ways=ways, within_alphabet=True)


def _row(m: TrainedModel, setting: str, curve: AdaptationCurve, step: int, test_seed: int, shots: int,
         experiment: str = EXPERIMENT, published=None, **extra) -> dict:
    mean, ci_tasks = curve.at(step)
    n_kept, _ = curve.tasks_at(step)
    by_alphabet = curve.by_group(step)
    n_alpha = len(by_alphabet)
    if n_alpha >= 3:
        mean, ci, _ = curve.over_groups(step)          # the mean of the alphabets' means, with its interval
        over = "alphabets"
    else:
        ci, over = ci_tasks, "episodes"
    return {"experiment": experiment, "algorithm": m.spec.method, "setting": setting, "metric": "accuracy",
            "steps": step, "mean": round(100 * mean, 4), "ci95": round(100 * ci, 4), "ci_over": over,
            "episode_ci95": round(100 * ci_tasks, 4), "n_tasks": n_kept,
            "test_alphabets": n_alpha, "per_alphabet": {k: round(100 * v, 2) for k, v in by_alphabet.items()},
            "diverged_tasks": curve.tasks_at(step)[1], "budget": m.metadata.get("budget", "quick"),
            "seed": int(m.metadata.get("seed", 0)), "test_seed": test_seed, "alpha": m.spec.alpha,
            "shots": shots, "ways": SETTINGS[setting.split(",")[0]][0], "run": m.name,
            "train_ways": m.spec.ways, "train_shots": m.spec.shots,
            "iterations": m.history.steps_done, "best_iteration": m.validation.get("best_iteration"),
            "width": m.learner.model.width, "departures": m.spec.departures,
            "train_characters": m.metadata.get("train_characters", 161),
            "ms_per_step": round(m.ms_per_step, 1), "train_seconds": round(m.history.seconds, 1),
            "published": published, **extra}


def _test_curve(m: TrainedModel, setting: str, transductive: bool, n: int, test_seed: int,
                images: OmniglotImages | None = None, runs=None, threads: int | None = None) -> AdaptationCurve:
    """One network's test curve in one setting and protocol (also the work of one process of
    :func:`evaluate_models` with ``jobs > 1``, where ``threads=1``)."""
    if threads is not None:
        torch.set_num_threads(threads)
    ways, shots = SETTINGS[setting]
    family = test_family(setting, images, runs)
    final = m.spec.test_steps
    # one query at a time costs a forward pass per query: only the last step, which the tables read
    shown = shown_steps(final) if transductive else [final]
    return adaptation_curve(m.learner_for(ways), m.params, family, steps=final, shots=shots,
                            queries=family.eval_queries, n_tasks=n, seed=test_seed, label=m.name,
                            exclude_diverged="by step", transductive=transductive, record=shown)


def _test_cost(m: TrainedModel, setting: str, transductive: bool, n: int) -> float:
    """A rough cost of a test curve, in images through the network: adaptation steps on the support set (forward
    and backward) and a forward pass over the queries at each measured step, each query with the support set
    when predicted one at a time."""
    ways, shots = SETTINGS[setting]
    queries = ways * (1 if shots == 1 else EVAL_QUERIES)
    measured = len(shown_steps(m.spec.test_steps)) if transductive else 1
    per_query = 1 if transductive else ways * shots + 1
    return n * (3 * m.spec.test_steps * ways * shots + measured * queries * per_query)


def _one_at_a_time(m: TrainedModel, setting: str) -> bool:
    """Whether ``m`` is also tested one query at a time in ``setting``: every 5-way 1-shot network (the
    BatchNorm comparison of chapter 7) and every 1-shot setting of a method whose paper predicted that way."""
    ways, shots = SETTINGS[setting]
    return shots == 1 and (ways == 5 or PUBLISHED_PROTOCOL[m.spec.method] != "transductive")


def evaluate_models(models: dict[str, TrainedModel], *, images: OmniglotImages | None = None,
                    n_tasks: int | None = None, test_seed: int = 0, settings: Sequence[str] | None = None,
                    non_transductive: bool = True, progress: bool = True, jobs: int = 1
                    ) -> tuple[list[dict], dict[tuple[str, str], AdaptationCurve]]:
    """Accuracy curves of every network in each of its settings on the test episodes, and their rows.

    1-shot settings are tested inside the 20 one-shot runs (10 evaluation alphabets; the interval is over
    alphabets), 5-shot on the held-out background alphabets (see :func:`test_family`). ``n_tasks`` defaults to
    the run's budget (600 episodes at ``cpu``, fewer for the slow Reptile and 20-way networks). Episodes come
    from the test stream ``test_seed``, so every method sees the same episodes in a setting (a network tested on
    fewer sees the first ones): :func:`paired_differences` compares them episode by episode. Accuracies are in
    percent. With ``non_transductive``, 1-shot episodes are also predicted one query at a time (settings
    ``"... , non-transductive"``, after the last test step only) where :func:`_one_at_a_time` says so: every
    5-way network, and Reptile and ProtoNet, whose papers report that protocol. Only the steps of
    :func:`shown_steps` are measured. ``jobs > 1`` tests that many curves at a time, each in its own process on
    one thread (the same numbers; on two cores about twice as fast as one process). Returns ``(rows, curves)``,
    curves keyed by ``(setting, run name)``.
    """
    from tqdm import tqdm

    jobs = check_positive_int("jobs", jobs)
    wanted = list(SETTINGS) if settings is None else list(settings)
    todo = []
    for m in models.values():
        for setting in m.spec.settings:
            if setting in wanted:
                n = n_tasks if n_tasks is not None else preset(m.spec.experiment, m.metadata.get("budget")).eval_tasks
                todo.append((m, setting, True, n))
                if non_transductive and _one_at_a_time(m, setting):
                    todo.append((m, setting, False, n))
    if jobs > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # the longest curves first, so that no process is left with one long curve at the end
        order = sorted(range(len(todo)), key=lambda i: -_test_cost(*todo[i]))
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {i: pool.submit(_test_curve, *todo[i][:3], todo[i][3], test_seed, None, None, 1)
                       for i in order}
            for i in tqdm(order, desc="test episodes", disable=not progress, leave=False):
                futures[i].result()
            found = [futures[i].result() for i in range(len(todo))]
    else:
        images = _images() if images is None else images
        runs = load_oneshot_runs() if any(SETTINGS[s][1] == 1 for s in wanted) else None
        found = [_test_curve(m, setting, transductive, n, test_seed, images, runs)
                 for m, setting, transductive, n in tqdm(todo, desc="test episodes", disable=not progress,
                                                         leave=False)]
    rows, curves = [], {}
    for (m, setting, transductive, n), curve in zip(todo, found):
        ways, shots = SETTINGS[setting]
        final = m.spec.test_steps
        label = setting if transductive else f"{setting}, non-transductive"
        curves[label, m.name] = curve
        protocol = "transductive" if transductive else "non-transductive"
        published = PUBLISHED.get((m.spec.method, setting, protocol))
        published_protocol = protocol if published is not None else None
        if published is None and transductive and shots > 1:
            # 5-shot episodes are predicted transductively only (15 queries a class, one at a time, at every
            # step would cost minutes): show the other protocol's published number, marked as such
            other = "non-transductive"
            published = PUBLISHED.get((m.spec.method, setting, other))
            published_protocol = other if published is not None else None
        for s in curve.steps.tolist():
            rows.append(_row(m, label, curve, s, test_seed, shots, published=published if s == final else None,
                             published_protocol=published_protocol if s == final else None,
                             final=(s == final), transductive=transductive))
    return rows, curves


def paired_differences(curves: dict, setting: str, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Paired differences of accuracy (percentage points) between networks tested on the same episodes.

    For each ``(a, b)`` of run names, the difference a − b after each network's test steps on every episode both
    kept, averaged within each alphabet; the interval is over alphabets when there are at least three (the
    runs' 10), else over episodes. Returns dicts with ``a``, ``b``, ``setting``, ``mean``, ``ci95``, ``ci_over``,
    ``n_tasks``, ``n_alphabets`` and ``verdict`` (``"a better"``, ``"b better"`` or ``"no clear difference"``).
    """
    out = []
    for a, b in pairs:
        ca, cb = curves.get((setting, a)), curves.get((setting, b))
        if ca is None or cb is None:
            continue
        n = min(ca.n_tasks, cb.n_tasks)
        for c in (ca, cb):
            if c.kept is None and c.diverged:
                raise ConfigError(f"{c.label}'s curve dropped {c.diverged} diverged episodes, so its episodes no "
                                  f"longer line up with another curve's: evaluate with exclude_diverged='by step'")
        if ca.n_tasks != cb.n_tasks and n % 20:
            raise ConfigError(f"{a} and {b} were tested on {ca.n_tasks} and {cb.n_tasks} episodes; the first {n} "
                              f"are shared only when {n} is a multiple of the 20 episodes drawn at a time")
        if ca.groups is not None and cb.groups is not None and not np.array_equal(ca.groups[:n], cb.groups[:n]):
            raise ConfigError(f"{a} and {b} were not tested on the same episodes (their alphabets differ): "
                              f"evaluate both with the same test seed and setting")
        sa, sb = len(ca.steps) - 1, len(cb.steps) - 1
        keep = np.ones(n, dtype=bool)
        for c, s in ((ca, sa), (cb, sb)):
            if c.kept is not None:
                keep &= c.kept[:n, s]
        diff = 100 * (ca.losses[:n, sa] - cb.losses[:n, sb])[keep]
        groups = ca.groups[:n][keep] if ca.groups is not None else None
        mean, ci, by_alphabet = mean_ci95_by_group(diff, groups)
        over = "alphabets" if by_alphabet else "episodes"
        n_groups = 0 if groups is None else len(np.unique(groups))
        verdict = "no clear difference" if abs(mean) <= ci else (f"{a} better" if mean > 0 else f"{b} better")
        out.append({"a": a, "b": b, "setting": setting, "mean": round(mean, 3), "ci95": round(ci, 3),
                    "ci_over": over, "n_tasks": int(keep.sum()), "n_alphabets": n_groups, "verdict": verdict})
    return out


def predict_episode(m: TrainedModel, batch, index: int = 0, transductive: bool = True) -> torch.Tensor:
    """Predicted labels of the query examples of episode ``index`` of ``batch`` after the run's test steps."""
    ways = int(batch.y_support[index].max()) + 1
    learner = m.learner_for(ways)
    xs, ys, xq = batch.x_support[index], batch.y_support[index], batch.x_query[index]
    adapted = learner.adapt(m.params, xs, ys, steps=m.spec.test_steps)
    with torch.no_grad():
        return learner.predict(adapted, xs, ys, xq, transductive=transductive).argmax(-1)


def misclassified(m: TrainedModel, batch, *, transductive: bool = True, limit: int = 8) -> list[dict]:
    """The first ``limit`` wrongly classified query images in the episodes of ``batch``, for
    :func:`~metalearn_core.viz.plot_misclassified`: each a dict with the ``query`` image, the support image of
    its class (``true_support``), the support image of the class it was given (``predicted_support``), a
    ``label`` and where it came from (``episode``, ``query_index``, ``true``, ``predicted``). With several
    shots, the first support image of a class stands for it."""
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer (how many mistakes to collect), got {limit!r}")
    found = []
    for b in range(batch.x_query.shape[0]):
        pred = predict_episode(m, batch, b, transductive=transductive)
        ys, yq = batch.y_support[b], batch.y_query[b]
        for q in (pred != yq).nonzero().flatten().tolist():
            true, wrong = int(yq[q]), int(pred[q])
            found.append({"query": batch.x_query[b, q], "true_support": batch.x_support[b][ys == true][0],
                          "predicted_support": batch.x_support[b][ys == wrong][0], "label": f"{true} → {wrong}",
                          "episode": b, "query_index": q, "true": true, "predicted": wrong})
            if len(found) == limit:
                return found
    return found


def oneshot_rows(models: dict[str, TrainedModel], *, runs=None) -> tuple[list[dict], dict]:
    """Error (%) of every 20-way network on the 20 official one-shot runs, in both prediction protocols.

    For each run the network adapts on the 20 training images (label j = training image j) for its test
    steps and picks, for each test image, the class with the largest output. Non-transductive: each test
    image is classified alone with the training images, as a person would (the headline number);
    transductive: the 20 test images of a run go through the network together. Also scores nearest neighbour
    on raw pixels. Returns ``(rows, scores)``.
    """
    runs = load_oneshot_runs() if runs is None else runs
    rows, scores = [], {}

    def add(name, score, m=None, transductive=None):
        mean, ci = mean_ci95([100 * e for e in score.run_errors])
        scores[name, transductive] = score
        rows.append({"experiment": ONESHOT, "algorithm": name, "metric": "error", "steps": 0 if m is None
                     else m.spec.test_steps, "mean": round(mean, 4), "ci95": round(ci, 4),
                     "n_tasks": len(score.run_errors), "setting": "20 runs" + (
                         "" if transductive is None else (", transductive" if transductive else
                                                          ", non-transductive")),
                     "budget": "cpu" if m is None else m.metadata.get("budget", "quick"),
                     "seed": 0 if m is None else int(m.metadata.get("seed", 0)), "test_seed": 0,
                     "run_errors": [round(100 * e, 2) for e in score.run_errors],
                     "test_alphabets": len(set(RUN_ALPHABETS[:len(score.run_errors)])),
                     "iterations": None if m is None else m.history.steps_done})

    def nearest_pixels(train, test):
        return torch.cdist(test.flatten(1), train.flatten(1)).argmin(1)

    add("nearest neighbour (pixels)", score_oneshot(runs, nearest_pixels))
    for m in models.values():
        if 20 not in [SETTINGS[s][0] for s in m.spec.settings]:
            continue
        learner = m.learner_for(20)
        for transductive in (False, True):
            def predict(train, test, learner=learner, m=m, transductive=transductive):
                labels = torch.arange(train.shape[0])
                adapted = learner.adapt(m.params, train, labels, steps=m.spec.test_steps)
                with torch.no_grad():
                    return learner.predict(adapted, train, labels, test, transductive=transductive).argmax(-1)

            add(m.spec.method, score_oneshot(runs, predict), m, transductive)
    return rows, scores


# ---- command-line entry points ----------------------------------------------------------------------------

def reproduce(budget: str | None = None, seed: int = 0, root=None, *, progress: bool = True, reuse: bool = False,
              jobs: int = 2, log: Callable[[str], None] = print, **_) -> dict[str, Path]:
    """Train the ten networks, evaluate them and write ``results/omniglot.json`` (with the paired differences)
    and ``results/oneshot.json``.

    Returns the paths written. Rows of other budgets and seeds already in the files are kept. A network whose
    training was interrupted resumes from its last saved state. With ``reuse=True``, networks whose checkpoints
    exist are evaluated without retraining. ``jobs``: networks trained (and test curves computed) at a time, one
    thread each (the shipped ``cpu`` networks were trained two at a time; see :func:`train`).
    """
    budget = resolve_budget(budget)
    log(f"Omniglot, budget {budget!r}, seed {seed}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s) on {platform.machine()}")
    models = train(budget=budget, seed=seed, root=root, progress=progress, reuse=reuse, jobs=jobs, log=log)
    for m in models.values():
        log(f"  {m!r}")
    rows, curves = evaluate_models(models, test_seed=0, progress=progress, jobs=jobs)
    pairs = paired_rows(curves)

    def this_run(r):                       # every earlier row of this budget and seed goes: one protocol per file
        return r["budget"] == budget and r["seed"] == seed and r.get("test_seed", 0) == 0

    paths = {"results": write_results(results_path(root), rows + pair_result_rows(pairs, models, 0),
                                      replace=this_run)}
    log(table(rows))
    log(pairs_table(pairs))
    one, _ = oneshot_rows(models)
    paths["one-shot runs"] = write_results(oneshot_path(root), one, replace=this_run)
    log(oneshot_table(one))
    paths.update({f"checkpoint {n}": m.path for n, m in models.items() if m.path})
    for what, p in paths.items():
        log(f"wrote {what}: {p}")
    return paths


def reproduce_oneshot(budget: str | None = None, seed: int = 0, root=None, *, progress: bool = True,
                      reuse: bool = True, log: Callable[[str], None] = print, **_) -> dict[str, Path]:
    """Score the 20-way networks on the 20 one-shot runs and write ``results/oneshot.json``.

    The networks are the Omniglot experiment's (trained only on the minimal background sets); those whose
    checkpoint of this budget and seed is missing are trained first.
    """
    budget = resolve_budget(budget)
    names = [s.name for s in RUNS if 20 in [SETTINGS[x][0] for x in s.settings]]
    models = train(names, budget=budget, seed=seed, root=root, progress=progress, reuse=reuse, log=log)
    rows, _ = oneshot_rows(models)
    path = write_results(oneshot_path(root), rows)
    log(oneshot_table(rows))
    log(f"wrote one-shot runs: {path}")
    return {"one-shot runs": path}


def evaluate(seed: int = 0, tasks: int | None = None, *, budget: str = "cpu", train_seed: int = 0, root=None,
             log: Callable[[str], None] = print, progress: bool = False, jobs: int = 2) -> list[dict]:
    """Re-evaluate the checkpoints of ``budget`` / ``train_seed`` on fresh test episodes from stream ``seed``
    (``jobs`` curves at a time, see :func:`evaluate_models`)."""
    models = load_models(budget=budget, seed=train_seed, root=root)
    rows, curves = evaluate_models(models, n_tasks=tasks, test_seed=seed, progress=progress, jobs=jobs)
    log(f"Omniglot checkpoints ({budget!r} budget, training seed {train_seed}) on fresh test episodes of the "
        f"held-out alphabets (test seed {seed}):")
    log(table(rows))
    log(pairs_table(paired_rows(curves)))
    return rows


def evaluate_oneshot(seed: int = 0, tasks: int | None = None, *, budget: str = "cpu", train_seed: int = 0,
                     root=None, log: Callable[[str], None] = print, progress: bool = False) -> list[dict]:
    """Score the shipped 20-way checkpoints on the 20 one-shot runs (the runs are fixed: ``seed`` is unused)."""
    names = [s.name for s in RUNS if 20 in [SETTINGS[x][0] for x in s.settings]]
    models = load_models(names, budget=budget, seed=train_seed, root=root)
    rows, _ = oneshot_rows(models)
    log(f"20-way networks ({budget!r} budget, training seed {train_seed}) on the 20 official one-shot runs "
        f"(a fixed test set: --seed and --tasks do not apply):")
    log(oneshot_table(rows))
    return rows


# ---- tables ---------------------------------------------------------------------------------------------

TABLE_TITLE = ("query accuracy (%) on test episodes from held-out alphabets, mean ± 95% CI, after the test-time "
               "steps, beside the published number of the same protocol")


def _final(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r.get("final", True) and r["experiment"] == EXPERIMENT]


def _fmt_published(p: float) -> str:
    return f"{p:.2f}" if round(p, 1) != p else f"{p:.1f}"


def table_cells(rows: Sequence[dict], digits: int = 1) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)``: one line per method, setting and prediction protocol (final step): ours with its
    interval, the published number of the same protocol (``*`` where only the other protocol's was published),
    how the network was trained and how that differs from its paper."""
    rows = _final(rows)
    head = ["setting", "method", "protocol", "ours", "paper", "trained", "differs from the paper"]
    lines = []
    for setting in SETTINGS:
        for method in METHODS:
            for transductive in (True, False):
                label = setting if transductive else f"{setting}, non-transductive"
                found = [r for r in rows if r["algorithm"] == method and r["setting"] == label]
                if not found:
                    continue
                r = found[0]
                ours = f"{r['mean']:.{digits}f} ± {r['ci95']:.{digits}f}" + ("†" if r.get("diverged_tasks") else "")
                paper = "–"
                if r.get("published") is not None:
                    paper = _fmt_published(r["published"])
                    if r.get("published_protocol") not in (None, "transductive" if transductive else
                                                           "non-transductive"):
                        paper += "*"
                trained = (f"{r.get('train_ways', '?')}-way {r.get('train_shots', '?')}-shot, "
                           f"{r.get('train_characters', 161)} characters, {r['iterations']:,} it., "
                           f"{r.get('train_seconds', 0) / 60:.0f} min")
                lines.append([setting, method, "transductive" if transductive else "one query at a time",
                              ours, paper, trained, r.get("departures") or "–"])
    return head, lines


TABLE_NOTES = ("1-shot: episodes drawn inside Lake et al.'s 20 one-shot runs (10 evaluation alphabets, none seen in "
               "training); ± is the 95% interval over the 10 alphabets' means, so it covers how much the score changes "
               "from one alphabet to another. 5-shot: episodes within the two held-out background alphabets "
               "(Sanskrit, Tagalog; ± over episodes: two alphabets cannot give an interval over alphabets).",
               "Paper: 1,200 training characters from all 50 alphabets (ours: the 220 outside validation for the "
               "networks tested only inside the runs, 161 from five alphabets for those that take the 5-shot test), "
               "64 filters, the papers' budgets; * the "
               "published number is of the other protocol (5-shot episodes are predicted transductively only). "
               "'differs' lists departures beyond the training length, with the paper's value in brackets. One "
               "trained network per row (training seed 0): ± does not cover the variation between training seeds.")


def table(rows: Sequence[dict], digits: int = 1) -> str:
    """The results table as text (see :func:`table_cells`)."""
    head, lines = table_cells(rows, digits)
    if not lines:
        return "(no rows)"
    return "\n".join([TABLE_TITLE, text_table(head, lines, align_left=3), *TABLE_NOTES])


def html_table(rows: Sequence[dict], digits: int = 1, caption=None):
    """The results table for notebooks and the website."""
    from .. import viz

    head, lines = table_cells(rows, digits)
    return viz.html_table(head, lines, caption=caption or TABLE_TITLE, align_left=3, notes=TABLE_NOTES)


PAIRED = "omniglot-paired"

#: What the `cpu` networks were asked to reach on the cross-alphabet test (transductive rows, the protocol of the
#: MAML paper; ProtoNet's non-transductive, the protocol of its paper): (description, run, setting, kind, value),
#: kind ">=": accuracy at least value; "within": within value points of MAML 5-way's accuracy; "error <": the best
#: error on the 20 one-shot runs below value.
TARGETS = (
    ("MAML, 5-way 1-shot", "MAML 5-way", "5-way 1-shot", ">=", 95.0),
    ("MAML, 5-way 5-shot", "MAML 5-way 5-shot", "5-way 5-shot", ">=", 98.0),
    ("MAML, 20-way 1-shot", "MAML 20-way", "20-way 1-shot", ">=", 85.0),
    ("FOMAML within 3 points of MAML, 5-way 1-shot", "FOMAML 5-way", "5-way 1-shot", "within", 3.0),
    ("Reptile within 3 points of MAML, 5-way 1-shot", "Reptile 5-way", "5-way 1-shot", "within", 3.0),
    ("ProtoNet, 5-way 1-shot", "ProtoNet", "5-way 1-shot, non-transductive", ">=", 97.0),
    ("best error on the 20 one-shot runs", None, "20 runs", "error <", 8.0),
)


def full_budget_hours(m: TrainedModel) -> float:
    """Hours the ``full`` preset of ``m``'s run would take on the machine that trained it, scaled from its measured
    time per step (more episodes per step cost proportionally more; 20-way MAML's five training steps are not
    counted, so this is a lower bound there)."""
    cpu, full = preset(m.spec.experiment, m.metadata.get("budget")), preset(m.spec.experiment, "full")
    return m.ms_per_step * (full.meta_batch / cpu.meta_batch) * full.iterations / 3.6e6


def targets_rows(rows: Sequence[dict], oneshot: Sequence[dict], models: dict) -> list[list[str]]:
    """One line per target of :data:`TARGETS`: what was asked, what we measured, whether it is met, and the
    training behind it (minutes now, hours at the ``full`` budget on the same machine)."""
    final = {(r["run"], r["setting"]): r for r in _final(rows)}
    maml = final.get(("MAML 5-way", "5-way 1-shot"))
    out = []
    for what, run, setting, kind, value in TARGETS:
        if kind == "error <":
            ours = [r for r in oneshot if r["experiment"] == ONESHOT and not r["algorithm"].startswith("nearest")]
            if not ours:
                continue
            best = min(ours, key=lambda r: r["mean"])
            met = best["mean"] < value
            out.append([what, f"< {value:g}%", f"{best['mean']:.2f}% ({best['algorithm']})", "yes" if met else "no",
                        "–", "–"])
            continue
        r = final.get((run, setting))
        if r is None or run not in models:
            continue
        m = models[run]
        if kind == "within":
            gap = (maml["mean"] - r["mean"]) if maml else float("nan")
            measured, met, asked = f"{r['mean']:.1f} (MAML {maml['mean']:.1f})", gap <= value, f"≤ {value:g} behind"
        else:
            measured, met, asked = f"{r['mean']:.1f} ± {r['ci95']:.1f}", r["mean"] >= value, f"≥ {value:g}%"
        out.append([what, asked, measured, "yes" if met else "no", f"{m.history.seconds / 60:.0f}",
                    f"{full_budget_hours(m):,.0f}"])
    return out


def targets_html_table(rows: Sequence[dict], oneshot: Sequence[dict], models: dict, caption=None):
    """The targets of :data:`TARGETS` against the shipped rows, as a table for the chapter."""
    from .. import viz

    return viz.html_table(["target", "asked", "measured", "met", "trained (min)", "full budget (h)"],
                          targets_rows(rows, oneshot, models), align_left=3,
                          caption=caption or "The cpu networks against their targets on the cross-alphabet test",
                          notes=("full budget: the `full` preset (the papers' iterations and meta-batches) timed "
                                 "on the same two cores by scaling each network's measured step; it is a GPU "
                                 "job.",))


def pair_result_rows(pairs: Sequence[dict], models: dict, test_seed: int) -> list[dict]:
    """Paired differences as rows of ``results/omniglot.json`` (experiment ``"omniglot-paired"``, algorithm
    ``"a − b"``, mean and ci95 in percentage points)."""
    out = []
    for p in pairs:
        m = models[p["a"]]
        out.append({"experiment": PAIRED, "algorithm": f"{p['a']} − {p['b']}", "setting": p["setting"],
                    "metric": "accuracy", "steps": 0, "mean": p["mean"], "ci95": p["ci95"],
                    "n_tasks": p["n_tasks"], "budget": m.metadata.get("budget", "quick"),
                    "seed": int(m.metadata.get("seed", 0)), "test_seed": test_seed, "a": p["a"], "b": p["b"],
                    "ci_over": p["ci_over"], "test_alphabets": p["n_alphabets"], "verdict": p["verdict"]})
    return out


def pairs_table(pairs: Sequence[dict]) -> str:
    """The paired differences as text."""
    lines = [[p["setting"], f"{p['a']} − {p['b']}", f"{p['mean']:+.1f} ± {p['ci95']:.1f}",
              f"{p['n_tasks']} / {p['n_alphabets']}", p["verdict"]] for p in pairs]
    if not lines:
        return "(no paired differences)"
    return "\n".join(["paired differences (points) on the same episodes, mean ± 95% CI",
                      text_table(["setting", "a − b", "points", "episodes / alphabets", "verdict"], lines,
                                 align_left=2)])


PAIRS = {"5-way 1-shot": (("MAML 5-way", "FOMAML 5-way"), ("MAML 5-way", "Reptile 5-way"),
                          ("ProtoNet", "MAML 5-way")),
         "5-way 5-shot": (("MAML 5-way 5-shot", "FOMAML 5-way 5-shot"), ("MAML 5-way 5-shot", "Reptile 5-way"),
                          ("ProtoNet 5-shot test", "MAML 5-way 5-shot")),
         "20-way 1-shot": (("MAML 20-way", "FOMAML 20-way"), ("MAML 20-way", "Reptile 20-way"),
                           ("ProtoNet", "MAML 20-way"))}


def paired_rows(curves: dict, settings: Sequence[str] | None = None) -> list[dict]:
    """The paired differences of :data:`PAIRS` (percentage points) in each setting, from the curves of
    :func:`evaluate_models` (see :func:`paired_differences`)."""
    out = []
    for setting in (SETTINGS if settings is None else settings):
        out += paired_differences(curves, setting, PAIRS[setting])
    return out


def paired_html_table(pairs: Sequence[dict], caption=None):
    """Paired differences as a table: who is ahead, by how much, on how many shared episodes."""
    from .. import viz

    head = ["setting", "difference", "points, a − b", "over", "verdict"]
    lines = [[p["setting"], f"{p['a']} − {p['b']}", f"{p['mean']:+.1f} ± {p['ci95']:.1f}",
              f"{p['n_tasks']} episodes, {p['n_alphabets']} alphabets", p["verdict"]] for p in pairs]
    return viz.html_table(head, lines, caption=caption or "paired differences on the same test episodes "
                          "(transductive, after each network's test steps), mean ± 95% CI", align_left=2,
                          notes=("The interval is over alphabets (of the per-alphabet mean differences) where "
                                 "there are 10, over episodes for the two 5-shot alphabets. 'no clear "
                                 "difference': the interval contains 0.",))


ONESHOT_TITLE = "error (%) on the 20 official 20-way one-shot runs: ours and Lake et al. (2015)"
ONESHOT_NOTES = ("Ours: trained on the two minimal background sets (ProtoNet and the 20-way MAML and FOMAML networks "
                 "on the 220 characters outside validation, the 20-way Reptile network on 161); ± is the 95% interval "
                 "over the 20 runs. Each network is scored once, in both prediction protocols.",)


def _oneshot_cells(rows: Sequence[dict], digits: int = 1):
    """``(header, lines)``: classifier, error and source; ours first (best first), then Lake et al.'s table."""
    ours = [r for r in rows if r["experiment"] == ONESHOT]
    head = ["classifier", "error (%)", "source"]
    lines = []
    for r in sorted(ours, key=lambda r: r["mean"]):
        source = "ours, no training" if r["algorithm"].startswith("nearest") else f"ours, {r['budget']} budget"
        lines.append([f"{r['algorithm']} ({r['setting'].split(', ')[-1]})" if ", " in r["setting"]
                      else r["algorithm"], f"{r['mean']:.{digits}f} ± {r['ci95']:.{digits}f}", source])
    for name, err in ONESHOT_PUBLISHED.items():
        lines.append([name, err, "Lake et al. 2015"])
    return head, lines


def oneshot_table(rows: Sequence[dict]) -> str:
    """Our one-shot errors (mean ± 95% CI over the 20 runs) above Lake et al.'s table."""
    head, lines = _oneshot_cells(rows)
    return "\n".join([ONESHOT_TITLE, text_table(head, lines, align_left=len(head)), *ONESHOT_NOTES])


def oneshot_html_table(rows: Sequence[dict], caption=None):
    """The one-shot table for notebooks and the website (see :func:`oneshot_table`)."""
    from .. import viz

    head, lines = _oneshot_cells(rows)
    return viz.html_table(head, lines, caption=caption or ONESHOT_TITLE, align_left=1, notes=ONESHOT_NOTES)


def shipped_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/omniglot.json`` for one training budget and seed (test seed 0)."""
    return select(read_results(results_path(root)), experiment=EXPERIMENT, budget=budget, seed=seed, test_seed=0)


def shipped_pairs(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """The paired differences stored in ``results/omniglot.json`` (see :func:`pair_result_rows`), as returned by
    :func:`paired_differences`."""
    rows = select(read_results(results_path(root)), experiment=PAIRED, budget=budget, seed=seed, test_seed=0)
    return [{"a": r["a"], "b": r["b"], "setting": r["setting"], "mean": r["mean"], "ci95": r["ci95"],
             "ci_over": r["ci_over"], "n_tasks": r["n_tasks"], "n_alphabets": r["test_alphabets"],
             "verdict": r["verdict"]} for r in rows]


def shipped_oneshot_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/oneshot.json`` for one training budget and seed (plus the pixel baseline)."""
    rows = read_results(oneshot_path(root))
    return [r for r in rows if r["algorithm"].startswith("nearest") or (r["budget"] == budget and r["seed"] == seed)]
