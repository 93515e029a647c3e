r"""Few-shot classification on Omniglot, and Lake et al.'s 20 one-shot runs: the runs behind chapter 7.

What is trained (:data:`RUNS`), all through the one training loop (:func:`~metalearn_core.training.meta_train`)
on N-way episodes of the *training* alphabets of the two minimal background sets, with 90° rotations as new
classes:

* MAML, first-order MAML and Reptile, each twice: a 5-way model (tested 5-way 1-shot and 5-way 5-shot) and a
  20-way model (tested 20-way 1-shot), as in the papers, whose networks end in an N-way head;
* Prototypical Networks once, 20-way (an embedding has no head, so the same network serves every N).

The network is :class:`~metalearn_core.models.Conv4`; its width (filters per layer), the number of
iterations and the meta-batch come from the budget presets ``omniglot`` (5-way), ``omniglot_20way`` and
``omniglot_protonet``. At ``cpu`` a method's models train in at most about 20 minutes on two cores, which
means 32 filters instead of the papers' 64 and a few thousand episodes instead of millions: the chapter
states this next to every number.

Evaluation: ≥ 600 test episodes per setting from the held-out test alphabet (15 query drawings per class),
mean ± 95% CI of the query accuracy after 0..k test-time steps, written to ``results/omniglot.json``; the
same episodes predicted non-transductively (each query alone with the support set) for the BatchNorm
section. :func:`oneshot_rows` scores the 20-way models on the 20 official one-shot runs and writes
``results/oneshot.json``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..algorithms import MetaLearner, ProtoNet, make_learner
from ..budgets import preset, resolve_budget
from ..checkpoints import load_checkpoint, save_checkpoint
from ..data import OmniglotImages, load_omniglot, load_oneshot_runs, score_oneshot
from ..errors import CheckpointError, ConfigError
from ..evaluation import AdaptationCurve, adaptation_curve, mean_ci95
from ..models import Conv4
from ..omniglot import OmniglotTasks, cross_entropy_loss
from ..results import read_results, results_dir, select, text_table, write_results
from ..training import History, meta_train
from .runs import SpecModel, checkpoint_file, select_runs

__all__ = ["EXPERIMENT", "SETTINGS", "PUBLISHED", "ONESHOT_PUBLISHED", "RunSpec", "RUNS", "TrainedModel",
           "checkpoint_path", "results_path", "oneshot_path", "train", "load_models", "evaluate_models",
           "oneshot_rows", "predict_episode", "misclassified", "reproduce", "evaluate", "reproduce_oneshot",
           "evaluate_oneshot", "PUBLISHED_PROTOCOL", "table", "html_table", "oneshot_table", "oneshot_html_table",
           "shipped_rows", "shipped_oneshot_rows", "TRAIN_QUERIES", "EVAL_QUERIES"]

EXPERIMENT = "omniglot"
ONESHOT = "oneshot"
#: test settings: name -> (N ways, K shots)
SETTINGS = {"5-way 1-shot": (5, 1), "5-way 5-shot": (5, 5), "20-way 1-shot": (20, 1)}
#: query drawings per class in meta-training episodes (each class has 20 drawings; K + Q ≤ 20)
TRAIN_QUERIES = 5
#: query drawings per class in test episodes
EVAL_QUERIES = 15
#: the setting whose episodes are also predicted non-transductively (the BatchNorm section of chapter 7)
NON_TRANSDUCTIVE_SETTING = "5-way 1-shot"

#: Published test accuracies (%) on Omniglot, full background set (1200 characters) and 64-filter networks:
#: Finn et al. 2017 (MAML, first-order MAML: transductive), Nichol et al. 2018 (Reptile, non-transductive),
#: Snell et al. 2017 (Prototypical Networks).
PUBLISHED = {
    ("MAML", "5-way 1-shot"): 98.7, ("MAML", "5-way 5-shot"): 99.9, ("MAML", "20-way 1-shot"): 95.8,
    ("FOMAML", "5-way 1-shot"): 98.3, ("FOMAML", "5-way 5-shot"): 99.2, ("FOMAML", "20-way 1-shot"): 89.4,
    ("Reptile", "5-way 1-shot"): 95.39, ("Reptile", "5-way 5-shot"): 98.90, ("Reptile", "20-way 1-shot"): 88.14,
    ("ProtoNet", "5-way 1-shot"): 98.8, ("ProtoNet", "5-way 5-shot"): 99.7, ("ProtoNet", "20-way 1-shot"): 96.0,
}

#: How each paper's published numbers were predicted: MAML's code feeds all queries together (transductive);
#: Nichol et al. define and report Reptile non-transductively; ProtoNets' code normalises with running
#: averages at test time (``model.eval()``), so no query influences another either.
PUBLISHED_PROTOCOL = {"MAML": "transductive", "FOMAML": "transductive", "Reptile": "non-transductive",
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
    """One network the experiment trains.

    Attributes:
        method: ``"MAML"``, ``"FOMAML"``, ``"Reptile"`` or ``"ProtoNet"`` (the name in the tables).
        algorithm: the learner's registry name (:func:`~metalearn_core.algorithms.make_learner`).
        ways: N of the training episodes (and of the network's head, for the gradient-based methods).
        alpha: inner learning rate α (training and test).
        inner_steps: inner steps in meta-training, as in the papers; a budget preset can lower it for MAML
            and first-order MAML (``Preset.inner_steps``).
        test_steps: inner steps at test time.
        settings: the test settings (keys of :data:`SETTINGS`) this network is evaluated in.
        experiment: the preset table of its budgets.
        meta_batch_divisor: the budget's meta-batch is divided by this (Reptile, whose 5 inner steps on every
            example of an episode cost more, takes half the episodes per step).
        budget_steps: whether ``Preset.inner_steps`` applies (MAML, FOMAML; never Reptile, for which one inner
            step would be joint training).
    """

    method: str
    algorithm: str
    ways: int
    alpha: float
    inner_steps: int
    test_steps: int
    settings: tuple[str, ...]
    experiment: str
    meta_batch_divisor: int = 1
    budget_steps: bool = False

    @property
    def name(self) -> str:
        return self.method if self.algorithm == "protonet" else f"{self.method} {self.ways}-way"

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

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
        return make_learner(self.algorithm, model, alpha=self.alpha, inner_steps=self.train_steps(budget),
                            loss=cross_entropy_loss)


_5 = ("5-way 1-shot", "5-way 5-shot")
_20 = ("20-way 1-shot",)
#: The seven networks. α and steps: MAML's paper (5-way α=0.4, 1 step in training, 3 at test; 20-way α=0.1,
#: 5 steps); Reptile here adapts by plain gradient steps like the others (α=0.1, 5 steps in training, 10 at
#: test) where Nichol et al. used Adam in the inner loop.
RUNS = (
    RunSpec("MAML", "maml", 5, 0.4, 1, 3, _5, "omniglot"),
    RunSpec("MAML", "maml", 20, 0.1, 5, 5, _20, "omniglot_20way", budget_steps=True),
    RunSpec("FOMAML", "fomaml", 5, 0.4, 1, 3, _5, "omniglot"),
    RunSpec("FOMAML", "fomaml", 20, 0.1, 5, 5, _20, "omniglot_20way", budget_steps=True),
    RunSpec("Reptile", "reptile", 5, 0.1, 5, 10, _5, "omniglot", meta_batch_divisor=2),
    RunSpec("Reptile", "reptile", 20, 0.1, 5, 10, _20, "omniglot_20way", meta_batch_divisor=2),
    RunSpec("ProtoNet", "protonet", 20, 0.01, 0, 0, tuple(SETTINGS), "omniglot_protonet"),
)
METHODS = ("MAML", "FOMAML", "Reptile", "ProtoNet")


def _specs(names: Iterable[str] | None) -> list[RunSpec]:
    """Runs by name (``"MAML 5-way"``, slug ``maml-5-way``) or by method (``"MAML"``: both of its networks)."""
    return select_runs(RUNS, names, lambda s: (s.name.lower(), s.slug, s.method.lower()), what="Omniglot run",
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


class TrainedModel(SpecModel):
    """A trained network: its run (``spec``, a :class:`RunSpec`), learner, parameters, training record and
    validation curve.

    ``validation`` holds ``{"iterations": [...], "accuracy": [...], "ci95": [...]}`` (percent), the accuracy on
    episodes of the validation alphabet measured during training, after the run's test-time steps.
    """

    @property
    def validation(self) -> dict:
        return self.metadata.get("validation", {"iterations": [], "accuracy": [], "ci95": []})

    def learner_for(self, ways: int) -> MetaLearner:
        """The learner that classifies ``ways``-way episodes with this network."""
        return self.spec.learner(self.metadata.get("budget"), ways=ways, model=self.learner.model)

    def __repr__(self) -> str:
        where = f", from {self.path.name}" if self.path else ""
        return (f"TrainedModel({self.name}: {self.learner.describe()}, width {self.learner.model.width}, "
                f"{self.history.steps_done} iterations in {self.history.seconds / 60:.1f} min, "
                f"{self.ms_per_step:.0f} ms/step{where})")


def _images(data_dir=None) -> OmniglotImages:
    return load_omniglot(data_dir=data_dir)


def _validation_callback(spec: RunSpec, learner: MetaLearner, images: OmniglotImages, budget: str,
                         every: int, record: dict, episodes: int) -> Callable:
    """A training callback measuring accuracy on validation episodes every ``every`` iterations."""
    family = OmniglotTasks(images, "val", ways=spec.ways)
    eval_learner = spec.learner(budget, ways=spec.ways, model=learner.model)

    def callback(iteration, metrics, params):
        if iteration % every and iteration != record["last"]:
            return None
        curve = adaptation_curve(eval_learner, params, family, steps=spec.test_steps, shots=1,
                                 queries=TRAIN_QUERIES, n_tasks=episodes, seed=10_000,
                                 exclude_diverged=True)
        mean, ci = curve.at(spec.test_steps)
        record["iterations"].append(iteration)
        record["accuracy"].append(round(100 * mean, 3))
        record["ci95"].append(round(100 * ci, 3))
        return None

    return callback


def train(names: Iterable[str] | None = None, *, budget: str | None = None, seed: int = 0, root=None,
          data_dir=None, progress: bool = True, save: bool = True, reuse: bool = False,
          log: Callable[[str], None] = print) -> dict[str, TrainedModel]:
    """Meta-train the runs ``names`` (default: all of :data:`RUNS`) and save their checkpoints.

    Every run checks its accuracy on validation episodes (the validation alphabet, 1-shot) ten times while it
    trains; the curve is saved in the checkpoint. With ``reuse=True`` a run whose checkpoint (same budget and
    seed) already exists is loaded, not retrained.
    """
    budget = resolve_budget(budget)
    images = _images(data_dir)
    out = {}
    for spec in _specs(names):
        path = checkpoint_path(spec.name, budget, seed, root)
        if reuse and path.is_file():
            out.update(load_models([spec.name], budget=budget, seed=seed, root=root))
            continue
        cfg = preset(spec.experiment, budget)
        learner = spec.learner(budget)
        family = OmniglotTasks(images, "train", ways=spec.ways, rotations=True)
        meta_batch = max(1, cfg.meta_batch // spec.meta_batch_divisor)
        record = {"iterations": [], "accuracy": [], "ci95": [], "last": cfg.iterations}
        every = max(1, cfg.iterations // 10)
        every = max(cfg.log_every, every - every % cfg.log_every)
        val = _validation_callback(spec, learner, images, budget, every, record, max(20, cfg.eval_tasks // 6))
        log(f"  {spec.name}: {learner.describe()}, Conv4 width {cfg.width}, {cfg.iterations} iterations × "
            f"{meta_batch} episodes")
        result = meta_train(learner, family, budget=budget, seed=seed, experiment=spec.experiment,
                            meta_batch=meta_batch, shots=1, queries=TRAIN_QUERIES, callbacks=[val],
                            progress=progress)
        record.pop("last")
        metadata = dict(result.metadata(), run=spec.name, method=spec.method, ways=spec.ways,
                        test_steps=spec.test_steps, meta_batch=meta_batch, validation=record,
                        width=cfg.width)
        if save:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, result.params, model=learner.model, metadata=metadata)
        out[spec.name] = TrainedModel(spec, learner, result.params, result.history, metadata,
                                      path if save else None)
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
        if saved.get("algorithm") != learner.name or ckpt.metadata.get("ways") != spec.ways:
            raise CheckpointError(
                f"{path} holds a {saved.get('algorithm', 'unknown')} {ckpt.metadata.get('ways')}-way network, not "
                f"{spec.name}: re-create it with `python -m metalearn_core reproduce omniglot --budget {budget} "
                f"--seed {seed}`")
        out[spec.name] = TrainedModel(spec, learner, ckpt.params,
                                      History.from_dict(ckpt.metadata.get("history", {})), ckpt.metadata, path)
    return out


def _row(m: TrainedModel, setting: str, curve: AdaptationCurve, step: int, test_seed: int, shots: int,
         experiment: str = EXPERIMENT, published=None, **extra) -> dict:
    mean, ci = curve.at(step)
    return {"experiment": experiment, "algorithm": m.spec.method, "setting": setting, "metric": "accuracy",
            "steps": step, "mean": round(100 * mean, 4), "ci95": round(100 * ci, 4), "n_tasks": curve.n_tasks,
            "diverged_tasks": curve.diverged, "budget": m.metadata.get("budget", "quick"),
            "seed": int(m.metadata.get("seed", 0)), "test_seed": test_seed, "alpha": m.spec.alpha,
            "shots": shots, "ways": SETTINGS[setting.split(",")[0]][0], "run": m.name,
            "iterations": m.history.steps_done, "width": m.learner.model.width,
            "ms_per_step": round(m.ms_per_step, 1), "train_seconds": round(m.history.seconds, 1),
            "published": published, **extra}


def evaluate_models(models: dict[str, TrainedModel], *, images: OmniglotImages | None = None,
                    n_tasks: int | None = None, test_seed: int = 0, settings: Sequence[str] | None = None,
                    non_transductive: bool = True, progress: bool = True
                    ) -> tuple[list[dict], dict[tuple[str, str], AdaptationCurve]]:
    """Accuracy curves of every network in each of its settings on test-alphabet episodes, and their rows.

    ``n_tasks`` defaults to the budget's number of test episodes (600 at ``cpu``). Episodes come from the test
    stream ``test_seed``; every method sees the same episodes in a setting. Accuracies are in percent. With
    ``non_transductive`` the episodes of :data:`NON_TRANSDUCTIVE_SETTING` are also predicted one query at a
    time (setting ``"5-way 1-shot, non-transductive"``). Returns ``(rows, curves)``, curves keyed by
    ``(setting, run name)``.
    """
    from tqdm import tqdm

    images = _images() if images is None else images
    wanted = list(SETTINGS) if settings is None else list(settings)
    jobs = []
    for m in models.values():
        for setting in m.spec.settings:
            if setting in wanted:
                jobs.append((m, setting, True))
                if non_transductive and setting == NON_TRANSDUCTIVE_SETTING:
                    jobs.append((m, setting, False))
    rows, curves = [], {}
    for m, setting, transductive in tqdm(jobs, desc="test episodes", disable=not progress, leave=False):
        ways, shots = SETTINGS[setting]
        n = n_tasks if n_tasks is not None else preset(m.spec.experiment, m.metadata.get("budget")).eval_tasks
        family = OmniglotTasks(images, "test", ways=ways)
        curve = adaptation_curve(m.learner_for(ways), m.params, family, steps=m.spec.test_steps, shots=shots,
                                 queries=EVAL_QUERIES, n_tasks=n, seed=test_seed, label=m.name,
                                 exclude_diverged=True, transductive=transductive)
        label = setting if transductive else f"{setting}, non-transductive"
        curves[label, m.name] = curve
        final = m.spec.test_steps
        for s in range(final + 1):
            rows.append(_row(m, label, curve, s, test_seed, shots,
                             published=PUBLISHED.get((m.spec.method, setting)) if s == final and transductive
                             else None, final=(s == final), transductive=transductive))
    return rows, curves


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
              log: Callable[[str], None] = print, **_) -> dict[str, Path]:
    """Train the seven networks, evaluate them and write ``results/omniglot.json`` and ``results/oneshot.json``.

    Returns the paths written. Rows of other budgets and seeds already in the files are kept. With
    ``reuse=True``, networks whose checkpoints exist are evaluated without retraining.
    """
    budget = resolve_budget(budget)
    log(f"Omniglot, budget {budget!r}, seed {seed}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s) on {platform.machine()}")
    models = train(budget=budget, seed=seed, root=root, progress=progress, reuse=reuse, log=log)
    for m in models.values():
        log(f"  {m!r}")
    rows, _ = evaluate_models(models, test_seed=0, progress=progress)
    paths = {"results": write_results(results_path(root), rows)}
    log(table(rows))
    one, _ = oneshot_rows(models)
    paths["one-shot runs"] = write_results(oneshot_path(root), one)
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
             log: Callable[[str], None] = print, progress: bool = False) -> list[dict]:
    """Re-evaluate the checkpoints of ``budget`` / ``train_seed`` on fresh test episodes from stream ``seed``."""
    models = load_models(budget=budget, seed=train_seed, root=root)
    rows, _ = evaluate_models(models, n_tasks=tasks, test_seed=seed, progress=progress)
    log(f"Omniglot checkpoints ({budget!r} budget, training seed {train_seed}) on fresh test episodes of the "
        f"test alphabet (test seed {seed}):")
    log(table(rows))
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

TABLE_TITLE = ("query accuracy (%) on test-alphabet episodes, mean ± 95% CI, after the test-time steps "
               "[published, full background set, in brackets]")


def _final(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r.get("final", True) and r["experiment"] == EXPERIMENT]


def table_cells(rows: Sequence[dict], digits: int = 1) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)``: one line per method, one column per setting (final step), published in brackets."""
    rows = _final(rows)
    settings = [s for s in list(SETTINGS) + [f"{NON_TRANSDUCTIVE_SETTING}, non-transductive"]
                if any(r["setting"] == s for r in rows)]
    methods = [m for m in METHODS if any(r["algorithm"] == m for r in rows)]
    head = ["method"] + settings
    lines = []
    for method in methods:
        cells = [method]
        for s in settings:
            found = [r for r in rows if r["algorithm"] == method and r["setting"] == s]
            if not found:
                cells.append("–")
                continue
            r = found[0]
            cell = f"{r['mean']:.{digits}f} ± {r['ci95']:.{digits}f}" + ("†" if r.get("diverged_tasks") else "")
            if r.get("published") is not None:
                p = r["published"]
                cell += f" [{p:.2f}" if round(p, 1) != p else f" [{p:.1f}"
                cell += "*]" if PUBLISHED_PROTOCOL.get(method) == "non-transductive" else "]"
            cells.append(cell)
        lines.append(cells)
    return head, lines


TABLE_NOTES = ("Brackets: the published accuracy (full background set, 64 filters, the papers' budgets). "
               "* marks a published number predicted non-transductively (Reptile: Nichol et al.; ProtoNets: "
               "running BatchNorm averages at test time); the others (MAML, FOMAML) fed all queries together, "
               "as our first three columns do.",
               "± is the 95% interval over the test episodes of one trained network (training seed 0): it "
               "does not cover the variation between training seeds.")


def table(rows: Sequence[dict], digits: int = 1) -> str:
    """The results table as text (see :func:`table_cells`)."""
    head, lines = table_cells(rows, digits)
    if not lines:
        return "(no rows)"
    return "\n".join([TABLE_TITLE, text_table(head, lines, align_left=1), *TABLE_NOTES])


def html_table(rows: Sequence[dict], digits: int = 1, caption=None):
    """The results table for notebooks and the website."""
    from .. import viz

    head, lines = table_cells(rows, digits)
    return viz.html_table(head, lines, caption=caption or TABLE_TITLE, align_left=1, notes=TABLE_NOTES)


ONESHOT_TITLE = "error (%) on the 20 official 20-way one-shot runs: ours and Lake et al. (2015)"
ONESHOT_NOTES = ("Ours: trained on 6 alphabets (178 characters) of the two minimal background sets; ± is the 95% "
                 "interval over the 20 runs. Each network is scored once, in both prediction protocols.",)


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
    return select(read_results(results_path(root)), budget=budget, seed=seed, test_seed=0)


def shipped_oneshot_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/oneshot.json`` for one training budget and seed (plus the pixel baseline)."""
    rows = read_results(oneshot_path(root))
    return [r for r in rows if r["algorithm"].startswith("nearest") or (r["budget"] == budget and r["seed"] == seed)]
