r"""TAML, Meta-SGD and a learned update rule against MAML: the runs behind chapter 6.

Every method is trained by the one loop (:func:`~metalearn_core.training.meta_train`) on the same task
stream (same seed), with the same budget, and evaluated on the same test tasks:

* **sinusoid regression** (:data:`SINUSOID_RUNS`): MLP 1-40-40-1, one inner step of α = 0.01, K = 10 in
  training (Finn et al.'s setting); MAML, TAML with the Theil index, Meta-SGD and the learned update
  direction. Tested 5-shot and 10-shot, query MSE after 0..10 steps.
* **Omniglot 5-way 1-shot** (:data:`OMNIGLOT_RUNS`): :class:`~metalearn_core.models.Conv4`, one inner
  step of α = 0.4 in training and 3 at test (MAML's paper); MAML, TAML with entropy maximisation, TAML
  with the Theil index, and Meta-SGD. Trained on the 220 background characters outside validation
  (:data:`~metalearn_core.omniglot.SPLITS_RUNS`, as chapter 7's 1-shot networks); query accuracy on 5-way
  1-shot episodes drawn inside Lake et al.'s 20 one-shot runs (10 evaluation alphabets), with intervals and
  paired differences over alphabets.
* **the λ × measure explorer** (:data:`EXPLORER_GRID`): short sinusoid runs of TAML-inequality for every
  inequality measure and several λ, precomputed for chapter 6's sliders.

The budget presets ``taml_sinusoid``, ``taml_omniglot`` and ``taml_explorer`` keep the whole ``cpu``
reproduction within about 20 minutes on two cores: far fewer iterations than the papers (and than chapters
4 and 7), which the chapter states next to every number. ``quick`` only checks that everything runs.

:func:`reproduce` writes ``results/taml.json`` (the common row schema), ``results/taml_explorer.json`` and
checkpoints under ``results/checkpoints/taml/``; :func:`evaluate` re-evaluates the shipped checkpoints.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ..algorithms import MetaLearner, make_learner
from ..budgets import preset, resolve_budget
from ..checkpoints import load_checkpoint, save_checkpoint
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..evaluation import AdaptationCurve, adaptation_curve, mean_ci95_by_group
from ..inequality import MEASURES, describe_measure
from ..models import MLP, Conv4
from ..omniglot import SPLITS_RUNS, VAL_ALPHABETS, OmniglotTasks, OneShotRunTasks, cross_entropy_loss
from ..results import read_results, results_dir, select, table_cells, text_table, write_results
from ..tasks import SinusoidTasks, mse_loss
from ..training import History, meta_train
from .runs import SpecModel, checkpoint_file, select_runs

__all__ = ["EXPERIMENT", "RunSpec", "SINUSOID_RUNS", "OMNIGLOT_RUNS", "RUNS", "SINUSOID_SETTINGS",
           "OMNIGLOT_SETTING", "PUBLISHED", "TrainedModel", "checkpoint_path", "results_path", "explorer_path",
           "train", "load_models", "evaluate_models", "EXPLORER_GRID", "train_explorer_point",
           "compute_explorer", "load_explorer", "reproduce", "evaluate", "table", "html_table", "table_notes",
           "shipped_rows"]

EXPERIMENT = "taml"
#: sinusoid test settings: name -> K support points
SINUSOID_SETTINGS = {"sinusoid 5-shot": 5, "sinusoid 10-shot": 10}
#: the Omniglot test setting (5-way 1-shot on the test alphabet)
OMNIGLOT_SETTING = "Omniglot 5-way 1-shot"
SINUSOID_TEST_STEPS = 10
SINUSOID_QUERIES = 100
OMNIGLOT_TRAIN_QUERIES = 5

#: Published numbers, each in its own paper's protocol (which differs from ours; see chapter 6):
#: Finn et al. 2017 (MAML, sinusoid 5-shot after 1/5/10 steps, trained 70,000 iterations with K = 10;
#: Omniglot 5-way 1-shot, full background set, 64 filters); Li et al. 2017 (Meta-SGD: sinusoid trained and
#: tested 5-shot, one step, where their MAML baseline had 1.13; Omniglot 5-way 1-shot).
PUBLISHED = {
    ("MAML", "sinusoid 5-shot"): {1: 0.67, 5: 0.38, 10: 0.35},
    ("Meta-SGD", "sinusoid 5-shot"): {1: 0.90},
    ("MAML", OMNIGLOT_SETTING): {3: 98.7},
    ("Meta-SGD", OMNIGLOT_SETTING): {1: 99.53},
}


@dataclass(frozen=True)
class RunSpec:
    """One network of the experiment: its display name, domain, algorithm and the algorithm's settings."""

    name: str
    domain: str                     # "sinusoid" or "omniglot"
    algorithm: str
    options: tuple = ()             # extra keyword arguments of the learner, as (name, value) pairs

    @property
    def slug(self) -> str:
        words = "".join(c if c.isalnum() else " " for c in self.name.lower()).split()
        return "-".join([self.domain, *words])

    @property
    def experiment(self) -> str:
        return f"taml_{self.domain}"

    @property
    def alpha(self) -> float:
        return 0.01 if self.domain == "sinusoid" else 0.4

    @property
    def test_steps(self) -> int:
        return SINUSOID_TEST_STEPS if self.domain == "sinusoid" else 3

    def model(self, budget: str | None = None):
        if self.domain == "sinusoid":
            return MLP((1, 40, 40, 1))
        return Conv4(ways=5, width=preset(self.experiment, budget).width)

    def learner(self, budget: str | None = None) -> MetaLearner:
        loss = mse_loss if self.domain == "sinusoid" else cross_entropy_loss
        return make_learner(self.algorithm, self.model(budget), alpha=self.alpha, inner_steps=1, loss=loss,
                            **dict(self.options))


#: λ of the TAML runs in the tables (the explorer shows others)
LAMBDA = 0.1
SINUSOID_RUNS = (
    RunSpec("MAML", "sinusoid", "maml"),
    RunSpec("TAML (Theil)", "sinusoid", "taml-inequality", (("lam", LAMBDA), ("measure", "theil"))),
    RunSpec("Meta-SGD", "sinusoid", "meta-sgd"),
    RunSpec("learned update", "sinusoid", "learned-update"),
)
OMNIGLOT_RUNS = (
    RunSpec("MAML", "omniglot", "maml"),
    RunSpec("TAML (entropy)", "omniglot", "taml-entropy", (("lam", LAMBDA),)),
    RunSpec("TAML (Theil)", "omniglot", "taml-inequality", (("lam", LAMBDA), ("measure", "theil"))),
    RunSpec("Meta-SGD", "omniglot", "meta-sgd"),
)
RUNS = SINUSOID_RUNS + OMNIGLOT_RUNS


def _specs(names: Iterable[str] | None) -> list[RunSpec]:
    """Runs by slug (``sinusoid-maml``), by ``(domain, name)`` or by domain (``"omniglot"``: all of its runs)."""
    return select_runs(RUNS, names, lambda s: (s.slug, s.domain, f"{s.domain} {s.name.lower()}"),
                       what="TAML-chapter run",
                       listing=f"{', '.join(s.slug for s in RUNS)} (or a domain: sinusoid, omniglot)")


def results_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}.json"


def explorer_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}_explorer.json"


def checkpoint_path(slug: str, budget: str = "cpu", seed: int = 0, root=None) -> Path:
    """``results/checkpoints/taml/<run slug>-<budget>-seed<seed>.pt``."""
    return checkpoint_file(EXPERIMENT, _specs([slug])[0].slug, budget, seed, root)


class TrainedModel(SpecModel):
    """A trained network of this experiment: its spec (a :class:`RunSpec`), learner, parameters and training
    record."""

    def __repr__(self) -> str:
        where = f", from {self.path.name}" if self.path else ""
        return (f"TrainedModel({self.spec.domain} {self.name}: {self.learner.describe()}, "
                f"{self.history.steps_done} iterations, {self.ms_per_step:.1f} ms/step{where})")


def _family(spec: RunSpec, split: str = "train", images=None):
    """Training tasks (``split="train"``) or test tasks (``"test"``) of a run's domain: for Omniglot, episodes
    of the 220 characters outside validation to train, 5-way 1-shot episodes inside the one-shot runs to test."""
    if spec.domain == "sinusoid":
        return SinusoidTasks()
    from ..data import load_omniglot, load_oneshot_runs

    if split == "test":
        return OneShotRunTasks(load_oneshot_runs(), ways=5)
    images = load_omniglot() if images is None else images
    return OmniglotTasks(images, split, ways=5, rotations=(split == "train"), splits=SPLITS_RUNS)


def train(names: Iterable[str] | None = None, *, budget: str | None = None, seed: int = 0, root=None,
          progress: bool = True, save: bool = True, reuse: bool = False, images=None,
          log: Callable[[str], None] = print) -> dict[str, TrainedModel]:
    """Meta-train the runs ``names`` (default all of :data:`RUNS`; keys of the result are their slugs)."""
    budget = resolve_budget(budget)
    out = {}
    for spec in _specs(names):
        path = checkpoint_path(spec.slug, budget, seed, root)
        if reuse and path.is_file():
            out.update(load_models([spec.slug], budget=budget, seed=seed, root=root))
            continue
        learner = spec.learner(budget)
        cfg = preset(spec.experiment, budget)
        log(f"  {spec.domain} {spec.name}: {learner.describe()}, {cfg.iterations} iterations × {cfg.meta_batch} tasks")
        kwargs = {} if spec.domain == "sinusoid" else {"shots": 1, "queries": OMNIGLOT_TRAIN_QUERIES}
        result = meta_train(learner, _family(spec, images=images), budget=budget, seed=seed,
                            experiment=spec.experiment, progress=progress, **kwargs)
        metadata = dict(result.metadata(), run=spec.slug, name=spec.name, domain=spec.domain, width=cfg.width)
        if save:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, result.params, model=learner.model, metadata=metadata)
        out[spec.slug] = TrainedModel(spec, learner, result.params, result.history, metadata, path if save else None)
    return out


def load_models(names: Iterable[str] | None = None, *, budget: str = "cpu", seed: int = 0,
                root=None) -> dict[str, TrainedModel]:
    """The trained networks from their checkpoints (default: the shipped ``cpu`` ones of seed 0)."""
    budget = resolve_budget(budget)
    out = {}
    for spec in _specs(names):
        path = checkpoint_path(spec.slug, budget, seed, root)
        if not path.is_file():
            raise CheckpointError(
                f"no {spec.domain} {spec.name} checkpoint at {path} (budget {budget!r}, seed {seed}): create it "
                f"with `python -m metalearn_core reproduce taml --budget {budget} --seed {seed}`")
        learner = spec.learner(budget)
        ckpt = load_checkpoint(path, learner.model)
        saved = ckpt.metadata.get("learner", {})
        redo = f"re-create it with `python -m metalearn_core reproduce taml --budget {budget} --seed {seed}`"
        if ckpt.metadata.get("run") != spec.slug or saved.get("algorithm") != learner.name:
            raise CheckpointError(
                f"{path} holds {ckpt.metadata.get('run', 'another run')} ({saved.get('algorithm', 'unknown')}), "
                f"not {spec.slug}: {redo}")
        trained_on = str(ckpt.metadata.get("family", ""))
        if spec.domain == "omniglot" and (any(a in trained_on for a in VAL_ALPHABETS)
                                          or not all(a in trained_on for a in SPLITS_RUNS["train"])):
            raise CheckpointError(f"{path} was trained on other alphabets ({trained_on or 'not recorded'}) than "
                                  f"this experiment's ({', '.join(SPLITS_RUNS['train'])}), e.g. by an earlier "
                                  f"version: {redo}")
        out[spec.slug] = TrainedModel(spec, learner, ckpt.params,
                                      History.from_dict(ckpt.metadata.get("history", {})), ckpt.metadata, path)
    return out


def _rows(m: TrainedModel, setting: str, curve: AdaptationCurve, test_seed: int, shots: int) -> list[dict]:
    scale = 100.0 if curve.metric == "accuracy" else 1.0
    published = PUBLISHED.get((m.name, setting), {})
    rows = []
    grouped = curve.groups is not None and len(set(curve.groups.tolist())) >= 3
    for s in range(len(curve.mean)):
        mean, ci = curve.at(s)
        extra = {}
        if grouped:             # the mean of the alphabets' means, with the interval over alphabets
            extra = {"episode_ci95": round(scale * ci, 5), "ci_over": "alphabets"}
            mean, ci, extra["test_alphabets"] = curve.over_groups(s)
            extra["per_alphabet"] = {k: round(scale * v, 2) for k, v in curve.by_group(s).items()}
        n, left_out = curve.tasks_at(s)
        rows.append({"experiment": EXPERIMENT, "algorithm": m.name, "setting": setting,
                     "metric": "accuracy" if curve.metric == "accuracy" else "mse", "steps": s,
                     "mean": round(scale * mean, 5), "ci95": round(scale * ci, 5), "n_tasks": n, **extra,
                     "diverged_tasks": left_out, "budget": m.metadata.get("budget", "quick"),
                     "seed": int(m.metadata.get("seed", 0)), "test_seed": test_seed, "alpha": m.spec.alpha,
                     "shots": shots, "domain": m.spec.domain, "run": m.spec.slug,
                     "learner": m.learner.describe(), "iterations": m.history.steps_done,
                     "ms_per_step": round(m.ms_per_step, 2), "train_seconds": round(m.history.seconds, 1),
                     "published": published.get(s)})
    return rows


def evaluate_models(models: dict[str, TrainedModel], *, n_tasks: int | None = None, test_seed: int = 0,
                    images=None) -> tuple[list[dict], dict[tuple[str, str], AdaptationCurve]]:
    """Adaptation curves of every network on fresh test tasks (the same tasks for every method of a domain).

    Sinusoids: 5-shot and 10-shot, 100 query points per task, α = 0.01, 0..10 steps. Omniglot: 5-way 1-shot
    episodes inside the 20 one-shot runs (one query per class, 10 evaluation alphabets; means and intervals over
    alphabets), the run's α, 0..3 steps. ``n_tasks`` defaults to the
    budget's test tasks (600 at ``cpu``). Returns ``(rows, curves)`` with curves keyed by (setting, slug).

    A test task whose adaptation diverges is left out of the steps from the one where it diverged on
    (``exclude_diverged="by step"``), and each row counts those in ``diverged_tasks``: the learned update
    rules are trained for one step and may diverge when it is repeated, and their one-step numbers must
    still be over every task.
    """
    rows, curves = [], {}
    for slug, m in models.items():
        n = n_tasks if n_tasks is not None else preset(m.spec.experiment, m.metadata.get("budget")).eval_tasks
        if m.spec.domain == "sinusoid":
            jobs = [(setting, shots, SINUSOID_QUERIES) for setting, shots in SINUSOID_SETTINGS.items()]
        else:
            jobs = [(OMNIGLOT_SETTING, 1, None)]                 # the runs' one query per class
        for setting, shots, queries in jobs:
            family = _family(m.spec, "test", images)
            queries = family.eval_queries if queries is None else queries
            curve = adaptation_curve(m.learner, m.params, family, steps=m.spec.test_steps,
                                     shots=shots, queries=queries, n_tasks=n, seed=test_seed, label=m.name,
                                     exclude_diverged="by step")
            curves[setting, slug] = curve
            rows += _rows(m, setting, curve, test_seed, shots)
    _add_paired_differences(rows, curves)
    return rows, curves


def _add_paired_differences(rows: list[dict], curves: dict) -> None:
    """Give every row the paired difference to MAML of its domain on the same test tasks (``vs_maml``,
    ``vs_maml_ci95``, over ``paired_tasks`` tasks; percentage points for accuracy). Every method is tested on
    identical tasks, so the per-task difference has a much narrower interval than two separate intervals
    suggest. Tasks that diverged by that step in either run are not paired. Where the tasks come from alphabets
    (Omniglot), the difference is averaged within each alphabet and the interval is over alphabets."""
    for r in rows:
        base = curves.get((r["setting"], f"{r['domain']}-maml"))
        curve = curves.get((r["setting"], r["run"]))
        if base is None or curve is None or r["run"].endswith("-maml"):
            continue
        s = r["steps"]
        # the tasks in both runs' statistics at this step (a task that diverged in either is not paired)
        both = curve.kept[:, s] & base.kept[:, s]
        if both.sum() < 2:
            continue
        scale = 100.0 if r["metric"] == "accuracy" else 1.0
        diff = curve.losses[both, s] - base.losses[both, s]
        mean, ci, _ = mean_ci95_by_group(diff, None if curve.groups is None else curve.groups[both])
        r["vs_maml"], r["vs_maml_ci95"], r["paired_tasks"] = round(scale * mean, 5), round(scale * ci, 5), int(both.sum())


# ---- the λ × inequality-measure explorer ------------------------------------------------------------------------

#: Short sinusoid runs of TAML-inequality: every measure at several λ, plus λ = 0 (plain MAML).
EXPLORER_GRID = {"measure": tuple(MEASURES), "lam": (0.0, 0.3, 3.0)}
EXPLORER_EXPERIMENT = "taml_explorer"
EXPLORER_SHOTS = 5
#: each explorer point keeps every test task's loss after these numbers of steps (for the widget's right panel)
EXPLORER_STEPS_KEPT = (0, 1, 10)


def train_explorer_point(measure: str, lam: float, *, budget: str | None = None, seed: int = 0,
                         iterations: int | None = None, progress: bool = False) -> dict:
    """One short TAML-inequality run on sinusoids and its 5-shot test adaptation curve, as a JSON-able dict.

    Besides the curve, it keeps every test task's loss after 0, 1 and 10 steps (to show how unequal they are)
    and the inequality of the training batches as training went. A run that diverges has ``error`` set.
    """
    learner = make_learner("taml-inequality", MLP((1, 40, 40, 1)), alpha=0.01, inner_steps=1, lam=lam,
                           measure=measure)
    family = SinusoidTasks()
    entry = {"measure": learner.measure, "lam": lam, "label": describe_measure(learner.measure), "error": None}
    try:
        result = meta_train(learner, family, budget=budget, seed=seed, experiment=EXPLORER_EXPERIMENT,
                            iterations=iterations, progress=progress)
        curve = adaptation_curve(learner, result.params, family, steps=SINUSOID_TEST_STEPS, shots=EXPLORER_SHOTS,
                                 queries=SINUSOID_QUERIES, budget=budget, experiment=EXPLORER_EXPERIMENT, seed=seed,
                                 exclude_diverged=True)
    except DivergenceError as exc:
        entry["error"] = str(exc)
        return entry
    h = result.history
    entry.update(iterations=h.steps_done, ms_per_step=round(h.ms_per_step, 3), n_tasks=curve.n_tasks,
                 diverged_tasks=curve.diverged,
                 history={"iterations": h.iterations, "loss": [round(v, 5) for v in h.metrics["loss"]],
                          "loss_before": [round(v, 5) for v in h.metrics["loss_before"]],
                          "inequality": [round(v, 5) for v in h.metrics["inequality"]]},
                 curve={"mean": [round(float(v), 5) for v in curve.mean],
                        "ci95": [round(float(v), 5) for v in curve.ci95]},
                 task_losses={str(s): [round(float(v), 5) for v in curve.losses[:, s]] for s in EXPLORER_STEPS_KEPT})
    return entry


def compute_explorer(*, budget: str | None = None, seed: int = 0, root=None, progress: bool = True) -> Path:
    """Train every point of :data:`EXPLORER_GRID` and write ``results/taml_explorer.json``.

    λ = 0 is MAML whatever the measure, so it is trained once and shared by every measure.
    """
    from tqdm import tqdm

    budget = resolve_budget(budget)
    cfg = preset(EXPLORER_EXPERIMENT, budget)
    points = []
    combos = [(m, lam) for m in EXPLORER_GRID["measure"] for lam in EXPLORER_GRID["lam"] if lam > 0]
    maml = train_explorer_point("theil", 0.0, budget=budget, seed=seed)
    for measure in EXPLORER_GRID["measure"]:
        points.append(dict(maml, measure=measure, label=describe_measure(measure)))
    for measure, lam in tqdm(combos, desc="λ × measure grid", disable=not progress):
        points.append(train_explorer_point(measure, lam, budget=budget, seed=seed))
    doc = {"experiment": EXPLORER_EXPERIMENT, "budget": budget, "seed": seed, "iterations": cfg.iterations,
           "meta_batch": cfg.meta_batch, "eval_tasks": cfg.eval_tasks, "shots": EXPLORER_SHOTS,
           "grid": {k: list(v) for k, v in EXPLORER_GRID.items()}, "points": points, "torch": torch.__version__}
    path = explorer_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def load_explorer(root=None) -> dict:
    """The grid written by :func:`compute_explorer`, with ``index[(measure, λ)]`` for lookups."""
    path = explorer_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"no TAML explorer grid at {path}: create it with "
                                f"`python -m metalearn_core reproduce taml --budget cpu`")
    doc = json.loads(path.read_text())
    doc["index"] = {(p["measure"], p["lam"]): p for p in doc["points"]}
    return doc


# ---- command-line entry points ----------------------------------------------------------------------------

def reproduce(budget: str | None = None, seed: int = 0, root=None, *, explorer: bool = True, progress: bool = True,
              reuse: bool = False, log: Callable[[str], None] = print, **_) -> dict[str, Path]:
    """Train the eight networks, evaluate them, write ``results/taml.json`` and the explorer grid.

    Rows of other budgets and seeds already in the file are kept. With ``reuse=True``, networks whose
    checkpoints exist are evaluated without retraining.
    """
    budget = resolve_budget(budget)
    start = time.perf_counter()
    log(f"TAML chapter, budget {budget!r}, seed {seed}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s) on {platform.machine()}")
    models = train(budget=budget, seed=seed, root=root, progress=progress, reuse=reuse, log=log)
    for m in models.values():
        log(f"  {m!r}")
    rows, _ = evaluate_models(models, test_seed=0)
    paths = {"results": write_results(results_path(root), rows)}
    log(table(rows))
    if explorer:
        paths["explorer"] = compute_explorer(budget=budget, seed=seed, root=root, progress=progress)
    paths.update({f"checkpoint {m.spec.slug}": m.path for m in models.values() if m.path})
    for what, p in paths.items():
        log(f"wrote {what}: {p}")
    log(f"total time {(time.perf_counter() - start) / 60:.1f} min")
    return paths


def evaluate(seed: int = 0, tasks: int | None = None, *, budget: str = "cpu", train_seed: int = 0, root=None,
             log: Callable[[str], None] = print, **_) -> list[dict]:
    """Re-evaluate the checkpoints of ``budget`` / ``train_seed`` on fresh test tasks from stream ``seed``."""
    models = load_models(budget=budget, seed=train_seed, root=root)
    rows, _ = evaluate_models(models, n_tasks=tasks, test_seed=seed)
    log(f"TAML-chapter checkpoints ({budget!r} budget, training seed {train_seed}) on fresh test tasks "
        f"(test seed {seed}):")
    log(table(rows))
    return rows


# ---- tables -----------------------------------------------------------------------------------------------

TABLE_TITLES = {
    "sinusoid": "sinusoid query MSE, mean ± 95% CI over test tasks [published, in its own protocol, in brackets]",
    "omniglot": "Omniglot 5-way 1-shot query accuracy (%) on episodes inside the 20 one-shot runs, mean of the 10 "
                "alphabets ± 95% CI over them [published, full background set and 64 filters, in brackets]",
}
_STEPS = {"sinusoid": (0, 1, 5, 10), "omniglot": (1, 3)}          # Omniglot before adapting is chance (20%)
_DIGITS = {"sinusoid": 2, "omniglot": 1}


def _domain_rows(rows: Sequence[dict], domain: str) -> list[dict]:
    return [r for r in rows if r.get("experiment") == EXPERIMENT and r.get("domain") == domain]


def table(rows: Sequence[dict]) -> str:
    """Both tables (sinusoid MSE, Omniglot accuracy) as aligned text."""
    out = []
    for domain in ("sinusoid", "omniglot"):
        part = _domain_rows(rows, domain)
        if part:
            head, lines = table_cells(part, _STEPS[domain], digits=_DIGITS[domain])
            out += [TABLE_TITLES[domain], text_table(head, lines, align_left=2), *table_notes(part, domain), ""]
    return "\n".join(out).rstrip() or "(no rows)"


def html_table(rows: Sequence[dict], domain: str, caption: str | None = None):
    """One domain's table for notebooks and the website (``domain``: ``"sinusoid"`` or ``"omniglot"``)."""
    from .. import viz

    if domain not in _STEPS:
        raise ConfigError(f"domain must be 'sinusoid' or 'omniglot', got {domain!r}")
    part = _domain_rows(rows, domain)
    # short settings (the caption names the domain) and methods in the order of RUNS, so the table fits a page
    order = {s.slug: i for i, s in enumerate(RUNS)}
    short = sorted(({**r, "setting": SHORT_SETTINGS.get(r["setting"], r["setting"])} for r in part),
                   key=lambda r: order.get(r.get("run"), len(order)))
    head, lines = table_cells(short, _STEPS[domain], digits=_DIGITS[domain])
    return viz.html_table(head, lines, caption=caption or TABLE_TITLES[domain], align_left=2,
                          notes=table_notes(part, domain))


#: the settings as the chapter's tables show them (their captions name the domain)
SHORT_SETTINGS = {"sinusoid 5-shot": "5-shot", "sinusoid 10-shot": "10-shot", OMNIGLOT_SETTING: "5-way 1-shot"}


#: what the published numbers in brackets are, by domain
PUBLISHED_NOTES = {
    "sinusoid": ["MAML [in brackets]: Finn et al. 2017, 70,000 iterations, trained with K = 10. Meta-SGD [0.90]: "
                 "Li et al. 2017 in their own protocol (trained and tested 5-shot, one step), in which their MAML "
                 "baseline had 1.13."],
    "omniglot": ["MAML [98.7]: Finn et al. 2017; Meta-SGD [99.5]: Li et al. 2017; both 60,000 iterations on the full "
                 "background set with 64 filters."],
}


def table_notes(rows: Sequence[dict], domain: str) -> list[str]:
    """The notes under a domain's table: what the brackets are, and which rows left diverged tasks out."""
    notes = list(PUBLISHED_NOTES.get(domain, []))
    if any(r.get("diverged_tasks") for r in rows):
        notes.append("† some test tasks had diverged by that step (their loss grew 10⁴-fold or became NaN): they are "
                     "left out of that step's mean, and the row counts them (diverged_tasks)")
    return notes


def shipped_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/taml.json`` for one training budget and seed (test seed 0)."""
    return select(read_results(results_path(root)), budget=budget, seed=seed, test_seed=0)

