r"""Transfer with a pre-trained ResNet against meta-learned initialisations: the runs behind chapter 8.

What is trained: one :class:`~metalearn_core.models.ResNet` (budget preset ``transfer_pretrain``: width 16 and one
block per stage at ``cpu``, ResNet-18 at ``full``) pre-trained by the one training loop
(:func:`~metalearn_core.training.meta_train` with :class:`~metalearn_core.algorithms.JointTraining`) on the 712
classes of six background alphabets (178 characters × 4 rotations, the split
:data:`~metalearn_core.omniglot.SPLITS_V1`) as one classification. Its BatchNorm statistics are then estimated on
those source images; both go into ``results/checkpoints/transfer/``. The meta-learners are chapter 7's shipped
networks that never saw the in-domain test alphabet, Sanskrit (:data:`META_CANDIDATES`): since chapter 7's 1-shot
networks train on it, that is its second ProtoNet; MAML is left out until this chapter is re-run under chapter 7's
protocol. The shipped rows of MAML and ProtoNet come from chapter 7's earlier networks.

What is evaluated, every method on the same episodes (15 queries per class):

* **in-domain**: 5-way 1-shot and 5-shot episodes of the held-out test alphabet, and Lake et al.'s 20 one-shot
  runs (20-way, error);
* **cross-domain**: 5-way 1-shot and 5-shot episodes of scikit-learn's handwritten digits (the test half);
* classifiers on the pre-trained ResNet: nearest neighbour, a linear probe, fine-tuning of the last stage and
  the head; the same with BatchNorm statistics re-estimated on unlabelled digits (cross-domain only);
* a **full fine-tune on the digits** (the training half, 20% of it for early stopping; tested on the test half):
  linear probe, full fine-tuning with frozen or re-estimated BatchNorm statistics, and the same ResNet trained
  from scratch, with learning curves and a 2-D projection of the embeddings before and after;
* the **fine-tuning explorer**: query accuracy during fine-tuning on digits 5-way 5-shot episodes over a grid of
  learning rates and frozen stages (``results/transfer_explorer.json``, the chapter's widget).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..algorithms import JointTraining
from ..budgets import Preset, preset, resolve_budget
from ..checkpoints import load_checkpoint, save_checkpoint
from ..data import OmniglotImages, load_omniglot, load_oneshot_runs, score_oneshot
from ..errors import CheckpointError, ConfigError
from ..evaluation import TEST_SEED_OFFSET, adaptation_curve, mean_ci95
from ..finetune import estimate_stats, few_shot_predict, fine_tune
from ..models import Params, ResNet, Stats
from ..omniglot import SPLITS_V1, OmniglotTasks, cross_entropy_loss
from ..results import read_results, results_dir, select, write_results
from ..tasks import make_generator
from ..training import History, meta_train
from ..transfer import LabelledImageTasks, PooledClasses, load_digits, omniglot_source, split_per_class
from .runs import checkpoint_file

__all__ = ["EXPERIMENT", "PRESET", "SETTINGS", "PUBLISHED", "Pretrained", "pretrain", "load_pretrained",
           "checkpoint_path", "results_path", "explorer_path", "digits_split", "evaluate_few_shot",
           "oneshot_rows", "digits_full", "explorer_grid", "reproduce", "evaluate", "shipped_rows",
           "shipped_explorer", "table_cells", "html_table", "FEW_SHOT", "EXPLORER_GRID", "META_CANDIDATES"]

EXPERIMENT = "transfer"
PRESET = "transfer_pretrain"
#: settings: name -> (domain, ways, shots)
SETTINGS = {"Omniglot 5-way 1-shot": ("omniglot", 5, 1), "Omniglot 5-way 5-shot": ("omniglot", 5, 5),
            "digits 5-way 1-shot": ("digits", 5, 1), "digits 5-way 5-shot": ("digits", 5, 5)}
EVAL_QUERIES = 15
#: The classifiers on the pre-trained ResNet and their options (one fixed recipe each, chosen before testing
#: on the validation alphabet): a linear probe of 100 Adam steps; fine-tuning of layer4 and the head
#: (stem..layer3 frozen) for 15 steps with the head's rate ten times the body's.
FEW_SHOT = {
    "nearest neighbour": {},
    "linear probe": {"steps": 100, "lr": 0.01},
    "fine-tune (layer4 + head)": {"freeze_stages": 4, "steps": 15, "lr": 1e-3, "lrs": {"head": 1e-2}},
}
#: Chen et al. (2019), "A Closer Look at Few-shot Classification", 5-way 5-shot accuracy (%), ResNet-18 backbone.
PUBLISHED = {
    ("Baseline (pre-train + linear head)", "mini-ImageNet → CUB 5-way 5-shot"): 65.57,
    ("MAML", "mini-ImageNet → CUB 5-way 5-shot"): 51.34,
}
#: The fine-tuning explorer: digits 5-way 5-shot, learning rate of the body (head ×10) × frozen stages.
EXPLORER_GRID = {"lr": (1e-4, 1e-3, 1e-2), "freeze_stages": (0, 2, 4, 5)}
EXPLORER_STEPS = 50
EXPLORER_EVERY = 5


def checkpoint_path(budget: str | None = "cpu", seed: int = 0, root=None) -> Path:
    """``results/checkpoints/transfer/resnet-<budget>-seed<seed>.pt``."""
    return checkpoint_file(EXPERIMENT, "resnet", budget, seed, root)


def results_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}.json"


def explorer_path(root=None) -> Path:
    return results_dir(root) / f"{EXPERIMENT}_explorer.json"


@dataclass
class Pretrained:
    """The pre-trained ResNet: network, parameters, BatchNorm statistics (estimated on the source images),
    training record and metadata (``validation``: nearest-neighbour accuracy on validation-alphabet episodes
    during pre-training)."""

    model: ResNet
    params: Params
    stats: Stats
    history: History
    metadata: dict
    path: Path | None = None

    @property
    def body(self) -> tuple[ResNet, Params]:
        """The network without its 712-way source head, and its parameters."""
        return (self.model.with_head(None), {k: v for k, v in self.params.items() if not k.startswith("fc.")})

    def __repr__(self) -> str:
        return (f"Pretrained({self.model!r}: {self.history.steps_done} iterations in "
                f"{self.history.seconds / 60:.1f} min, {self.history.ms_per_step:.0f} ms/step)")


def _model(cfg: Preset, classes: int) -> ResNet:
    return ResNet(1, classes, cfg.width, cfg.blocks or (1, 1, 1, 1), 28)


def pretrain(*, budget: str | None = None, seed: int = 0, root=None, images: OmniglotImages | None = None,
             progress: bool = True, save: bool = True, log: Callable[[str], None] = print) -> Pretrained:
    """Pre-train the ResNet on the source classes, estimate its BatchNorm statistics, save the checkpoint."""
    budget = resolve_budget(budget)
    images = load_omniglot() if images is None else images
    cfg = preset(PRESET, budget)
    x, y = omniglot_source(images, rotations=True)
    family = PooledClasses(x, y, name=PRESET)
    model = _model(cfg, family.n_classes)
    learner = JointTraining(model, loss=cross_entropy_loss)
    val = OmniglotTasks(images, "val", ways=5, splits=SPLITS_V1).sample(max(20, cfg.eval_tasks // 6), shots=1, queries=5,
                                                     seed=10_000)
    body = model.with_head(None)
    record = {"iterations": [], "accuracy": [], "ci95": []}
    every = max(cfg.log_every, (cfg.iterations // 10) - (cfg.iterations // 10) % cfg.log_every)

    def callback(it, metrics, params):
        if it % every and it != cfg.iterations:
            return None
        p = {k: v for k, v in params.items() if not k.startswith("fc.")}
        accs = [float((few_shot_predict("nearest neighbour", body, p, None, val.x_support[i], val.y_support[i],
                                        val.x_query[i]) == val.y_query[i]).float().mean())
                for i in range(val.n_tasks)]
        mean, ci = mean_ci95(accs)
        record["iterations"].append(it)
        record["accuracy"].append(round(100 * mean, 3))
        record["ci95"].append(round(100 * ci, 3))
        return None

    log(f"  pre-training {model!r} on {family!r}: {cfg.iterations} iterations of {2 * 32} images")
    result = meta_train(learner, family, budget=budget, seed=seed, experiment=PRESET, shots=32, queries=32,
                        callbacks=[callback], progress=progress)
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(x.shape[0], generator=g)[:4096]]
    stats = estimate_stats(model, result.params, sample)
    metadata = dict(result.metadata(), validation=record, width=cfg.width, blocks=list(model.blocks),
                    source=repr(family), stats_images=int(sample.shape[0]))
    path = checkpoint_path(budget, seed, root)
    if save:
        save_checkpoint(path, result.params, model=model, metadata=metadata, buffers=stats)
    return Pretrained(model, result.params, stats, result.history, metadata, path if save else None)


def load_pretrained(budget: str = "cpu", seed: int = 0, root=None) -> Pretrained:
    """The pre-trained ResNet from its checkpoint (by default the shipped ``cpu`` one, seed 0)."""
    budget = resolve_budget(budget)
    path = checkpoint_path(budget, seed, root)
    if not path.is_file():
        raise CheckpointError(f"no pre-trained ResNet at {path} (budget {budget!r}, seed {seed}): create it with "
                              f"`python -m metalearn_core reproduce transfer --budget {budget} --seed {seed}`")
    cfg = preset(PRESET, budget)
    ckpt = load_checkpoint(path)
    classes = ckpt.model_spec.get("classes")
    model = _model(cfg, classes if isinstance(classes, int) and classes >= 2 else 2)
    if ckpt.model_spec != model.spec():
        raise CheckpointError(f"{path} holds {ckpt.model_spec}, not the {budget!r} budget's ResNet "
                              f"({model!r}): re-create it with `python -m metalearn_core reproduce transfer "
                              f"--budget {budget} --seed {seed}`")
    ckpt = load_checkpoint(path, model)
    if not ckpt.buffers:
        raise CheckpointError(f"{path} has no BatchNorm statistics: re-create it with `python -m metalearn_core "
                              f"reproduce transfer --budget {budget} --seed {seed}`")
    return Pretrained(model, ckpt.params, ckpt.buffers, History.from_dict(ckpt.metadata.get("history", {})),
                      ckpt.metadata, path)


def digits_split(seed: int = 0):
    """The digits halved within every class: ``(x_pool, y_pool, x_test, y_test)``. Few-shot episodes are drawn
    from the test half; the full fine-tune trains on the pool (80%) with early stopping on the rest (20%)."""
    x, y = load_digits()
    pool, test = split_per_class(y, (0.5, 0.5), seed=seed)
    return x[pool], y[pool], x[test], y[test]


def _family(domain: str, ways: int, images: OmniglotImages, digits) -> object:
    if domain == "omniglot":
        return OmniglotTasks(images, "test", ways=ways, splits=SPLITS_V1)
    return LabelledImageTasks(digits[2], digits[3], ways=ways, name="digits (test half)")


def _episodes(family, n: int, shots: int, seed: int):
    """The test episodes :func:`~metalearn_core.evaluation.adaptation_curve` draws for ``seed`` (same chunks,
    same generator), so that every method here is scored on exactly the meta-learners' episodes."""
    generator = make_generator(TEST_SEED_OFFSET + seed)
    chunk = family.eval_chunk
    for start in range(0, n, chunk):
        yield family.sample(min(chunk, n - start), shots=shots, queries=EVAL_QUERIES, generator=generator)


def _row(algorithm: str, setting: str, values, *, budget: str, seed: int, test_seed: int, metric="accuracy",
         steps=0, **extra) -> dict:
    mean, ci = mean_ci95(values)
    return {"experiment": EXPERIMENT, "algorithm": algorithm, "setting": setting, "metric": metric,
            "steps": int(steps), "mean": round(100 * mean, 4), "ci95": round(100 * ci, 4), "n_tasks": len(values),
            "budget": budget, "seed": seed, "test_seed": test_seed, **extra}


def evaluate_few_shot(pre: Pretrained, meta_models: dict | None = None, *, images: OmniglotImages | None = None,
                      n_tasks: int | None = None, test_seed: int = 0, settings: Sequence[str] | None = None,
                      progress: bool = True, resnet: bool = True) -> tuple[list[dict], dict]:
    """Accuracy (%) of every classifier in every setting on the same test episodes; ``(rows, per-task accuracies)``.

    ``meta_models``: chapter 7's trained networks by name (``"MAML 5-way"``, ``"ProtoNet"``), scored with their
    own protocol (adaptation steps, transductive BatchNorm) through
    :func:`~metalearn_core.evaluation.adaptation_curve`. With ``resnet=False`` only those networks are scored (to refresh their rows after
    chapter 7's networks were retrained, without re-running the ResNet classifiers). Each row has ``domain``, ``ways``, ``shots`` and ``bn``
    (which BatchNorm statistics the ResNet used); the per-task accuracies are keyed by ``(setting, classifier,
    bn)``.
    """
    images = load_omniglot() if images is None else images
    budget = pre.metadata.get("budget", "quick")
    seed = int(pre.metadata.get("seed", 0))
    n = preset(PRESET, budget).eval_tasks if n_tasks is None else n_tasks
    body, params = pre.body
    rows, per_task = [], {}
    wanted = list(SETTINGS) if settings is None else list(settings)
    # the digits, and the statistics re-estimated on their pool, only when a digits setting is asked for
    digits = digit_stats = None
    if any(SETTINGS[s][0] == "digits" for s in wanted):
        digits = digits_split()
        digit_stats = estimate_stats(body, params, digits[0]) if resnet else None
    common = dict(budget=budget, seed=seed, test_seed=test_seed)
    for setting in wanted:
        domain, ways, shots = SETTINGS[setting]
        family = _family(domain, ways, images, digits)
        variants = [(name, opts, pre.stats, "source") for name, opts in FEW_SHOT.items()] if resnet else []
        if domain == "digits" and resnet:
            variants += [(name, opts, digit_stats, "re-estimated on digits") for name, opts in FEW_SHOT.items()
                         if name != "fine-tune (layer4 + head)"]
        accs: dict[str, list[float]] = {f"{v[0]}|{v[3]}": [] for v in variants}
        bar = tqdm(total=n, desc=f"{setting}: ResNet classifiers", disable=not progress, leave=False)
        for batch in (_episodes(family, n, shots, test_seed) if variants else ()):
            for b in range(batch.n_tasks):
                xs, ys, xq, yq = batch.x_support[b], batch.y_support[b], batch.x_query[b], batch.y_query[b]
                for name, opts, stats, bn in variants:
                    pred = few_shot_predict(name.split(" (")[0], body, params, stats, xs, ys, xq, ways=ways,
                                            bn="frozen", **opts)
                    accs[f"{name}|{bn}"].append(float((pred == yq).float().mean()))
                bar.update(1)
        bar.close()
        for name, opts, stats, bn in variants:
            values = accs[f"{name}|{bn}"]
            per_task[setting, f"ResNet {name}", bn] = np.array(values)
            rows.append(_row(f"ResNet {name}", setting, values, steps=opts.get("steps", 0), domain=domain,
                             ways=ways, shots=shots, bn=bn, width=pre.model.width, **common))
        for run_name, m in (meta_models or {}).items():
            learner = m.learner_for(ways)
            curve = adaptation_curve(learner, m.params, family, steps=m.spec.test_steps, shots=shots,
                                     queries=EVAL_QUERIES, n_tasks=n, seed=test_seed, label=run_name,
                                     exclude_diverged=True)
            values = curve.losses[:, m.spec.test_steps]
            per_task[setting, m.spec.method, "batch"] = values
            rows.append(_row(f"{m.spec.method} (Conv4, chapter 7)", setting, values, steps=m.spec.test_steps,
                             domain=domain, ways=ways, shots=shots, bn="batch (transductive)",
                             width=m.learner.model.width, train_budget=m.metadata.get("budget"), **common))
    return rows, per_task


def oneshot_rows(pre: Pretrained, runs=None) -> list[dict]:
    """Error (%) of the ResNet classifiers on the 20 official one-shot runs (20-way), mean ± 95% CI over runs."""
    runs = load_oneshot_runs() if runs is None else runs
    body, params = pre.body
    rows = []
    for name, opts in FEW_SHOT.items():
        def predict(train, test, name=name, opts=opts):
            return few_shot_predict(name.split(" (")[0], body, params, pre.stats, train,
                                    torch.arange(train.shape[0]), test, ways=train.shape[0], bn="frozen", **opts)

        score = score_oneshot(runs, predict)
        mean, ci = mean_ci95([100 * e for e in score.run_errors])
        rows.append({"experiment": EXPERIMENT, "algorithm": f"ResNet {name}", "setting": "20 one-shot runs",
                     "metric": "error", "steps": opts.get("steps", 0), "mean": round(mean, 4), "ci95": round(ci, 4),
                     "n_tasks": len(score.run_errors), "budget": pre.metadata.get("budget", "quick"),
                     "seed": int(pre.metadata.get("seed", 0)), "test_seed": 0, "domain": "omniglot",
                     "run_errors": [round(100 * e, 2) for e in score.run_errors]})
    return rows


#: The whole-digits runs: name -> fine_tune options (``scratch`` starts from random parameters).
DIGITS_FULL = {
    "linear probe": {"freeze_stages": 5, "lr": 1e-2, "bn": "frozen"},
    "linear probe, BN re-estimated": {"freeze_stages": 5, "lr": 1e-2, "bn": "reestimate"},
    "full fine-tune, BN frozen": {"freeze_stages": 0, "lr": 1e-3, "lrs": {"head": 1e-2}, "bn": "frozen"},
    "full fine-tune, BN re-estimated": {"freeze_stages": 0, "lr": 1e-3, "lrs": {"head": 1e-2}, "bn": "reestimate"},
    "from scratch (same ResNet)": {"freeze_stages": 0, "lr": 1e-3, "lrs": {"head": 1e-2}, "bn": "reestimate",
                                   "scratch": True},
}


def _projection(z: torch.Tensor) -> np.ndarray:
    """The first two principal components of embeddings ``z`` (centred), signs fixed for reproducibility."""
    zc = z - z.mean(0)
    _, _, v = torch.linalg.svd(zc.double(), full_matrices=False)
    p = (zc.double() @ v[:2].T).numpy()
    return p * np.sign(p[np.abs(p).argmax(0), [0, 1]])


def digits_full(pre: Pretrained, *, steps: int | None = None, progress: bool = True, seed: int = 0
                ) -> tuple[list[dict], dict]:
    """Fine-tune on the whole digits pool, test on the test half; ``(rows, extra)`` with learning curves and
    the embeddings' 2-D projections (test images, before and after full fine-tuning)."""
    budget = pre.metadata.get("budget", "quick")
    steps = steps if steps is not None else (300 if budget != "quick" else 10)
    x_pool, y_pool, x_test, y_test = digits_split(seed)
    train_idx, val_idx = split_per_class(y_pool, (0.8, 0.2), seed=seed)
    body, params = pre.body
    rows, curves = [], {}
    finals = {}
    for name, opts in DIGITS_FULL.items():
        opts = dict(opts)
        start = body.init(seed) if opts.pop("scratch", False) else params
        stats = pre.stats if start is params else body.init_stats()
        result = fine_tune(body, start, stats, x_pool[train_idx], y_pool[train_idx], classes=10, steps=steps,
                           batch_size=64, x_val=x_pool[val_idx], y_val=y_pool[val_idx], eval_every=max(1, steps // 30),
                           seed=seed, progress=progress, desc=name, **opts)
        correct = (result.predict(x_test).argmax(-1) == y_test).float().numpy()
        rows.append(_row(f"ResNet {name}", "digits, all 10 classes", correct, steps=result.best_step,
                         domain="digits", bn=opts["bn"], budget=budget, seed=int(pre.metadata.get("seed", 0)),
                         test_seed=0, unit="test images", train_images=int(train_idx.numel()),
                         seconds=round(result.seconds, 1)))
        curves[name] = {k: [int(v) for v in vals] if k == "step" else [round(float(v), 5) for v in vals]
                        for k, vals in result.curve.items()}
        finals[name] = result
    ft = finals["full fine-tune, BN re-estimated"]
    with torch.no_grad():
        before = body.embed(params, x_test, pre.stats)
        after = ft.model.embed(ft.params, x_test, ft.stats)
    extra = {"curves": curves, "labels": y_test.tolist(),
             "projection_before": np.round(_projection(before), 4).tolist(),
             "projection_after": np.round(_projection(after), 4).tolist(), "steps": steps}
    return rows, extra


def explorer_grid(pre: Pretrained, *, n_tasks: int | None = None, progress: bool = True, test_seed: int = 0
                  ) -> dict:
    """Query accuracy every :data:`EXPLORER_EVERY` steps while fine-tuning on digits 5-way 5-shot episodes, for
    every learning rate and number of frozen stages of :data:`EXPLORER_GRID`: mean ± 95% CI over episodes."""
    budget = pre.metadata.get("budget", "quick")
    n = n_tasks if n_tasks is not None else (20 if budget != "quick" else 2)
    steps = EXPLORER_STEPS if budget != "quick" else 10
    body, params = pre.body
    digits = digits_split()
    family = LabelledImageTasks(digits[2], digits[3], ways=5)
    episodes = [e for batch in _episodes(family, n, 5, test_seed + 1) for e in
                [(batch.x_support[b], batch.y_support[b], batch.x_query[b], batch.y_query[b])
                 for b in range(batch.n_tasks)]]
    points = []
    jobs = [(lr, k) for lr in EXPLORER_GRID["lr"] for k in EXPLORER_GRID["freeze_stages"]]
    bar = tqdm(total=len(jobs) * len(episodes), desc="fine-tuning explorer", disable=not progress, leave=False)
    for lr, k in jobs:
        accs = []
        for xs, ys, xq, yq in episodes:
            r = fine_tune(body, params, pre.stats, xs, ys, classes=5, steps=steps, lr=lr, lrs={"head": 10 * lr},
                          freeze_stages=k, bn="frozen", x_val=xq, y_val=yq, eval_every=EXPLORER_EVERY,
                          progress=False)
            accs.append([0.2] + r.curve["val_accuracy"])
            bar.update(1)
        a = 100 * np.array(accs)
        stats = [mean_ci95(a[:, j]) for j in range(a.shape[1])]
        points.append({"lr": lr, "freeze_stages": k, "steps": [0] + r.curve["step"],
                       "accuracy": [round(m, 3) for m, _ in stats], "ci95": [round(c, 3) for _, c in stats]})
    bar.close()
    return {"budget": budget, "seed": int(pre.metadata.get("seed", 0)), "episodes": len(episodes),
            "setting": "digits 5-way 5-shot", "head_lr_factor": 10, "points": points}


def _write_explorer(path: Path, data: dict) -> None:
    import json

    old = json.loads(path.read_text()) if path.is_file() else []
    old = [d for d in old if (d["budget"], d["seed"]) != (data["budget"], data["seed"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old + [data], indent=1) + "\n")


def shipped_explorer(budget: str = "cpu", seed: int = 0, root=None) -> dict:
    """The precomputed fine-tuning explorer (``results/transfer_explorer.json``) for one budget and seed."""
    import json

    path = explorer_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"no explorer results at {path}: create them with `python -m metalearn_core "
                                f"reproduce transfer --budget {budget}`")
    for d in json.loads(path.read_text()):
        if d["budget"] == budget and d["seed"] == seed:
            return d
    raise ConfigError(f"{path} has no {budget!r} run of seed {seed}: run `python -m metalearn_core reproduce "
                      f"transfer --budget {budget} --seed {seed}`")


#: Chapter 7's networks scored here, by method: the first of each list that never saw this chapter's test
#: alphabet (chapter 7's 1-shot networks now train on it; its second ProtoNet, trained the same way, does not).
META_CANDIDATES = {"MAML": ("MAML 5-way",), "ProtoNet": ("ProtoNet", "ProtoNet 5-shot test")}


def _meta_models(log) -> dict:
    from . import omniglot

    test = SPLITS_V1["test"]
    out = {}
    for method, names in META_CANDIDATES.items():
        try:
            models = omniglot.load_models(names, budget="cpu", seed=0)
        except CheckpointError as exc:
            log(f"  (chapter 7's {method} networks are not available, so they are left out: {exc})")
            continue
        clean = [n for n in names if not any(a in str(models[n].metadata.get("family", "")) for a in test)]
        for name in names:
            if name not in clean:
                log(f"  (chapter 7's {name} network was trained on {', '.join(test)}, this chapter's in-domain "
                    f"test alphabet: scoring it there would not be a test)")
        if clean:
            out[clean[0]] = models[clean[0]]
        else:
            log(f"  ({method} is left out: none of chapter 7's {method} networks is free of the test alphabet)")
    return out


def reproduce(budget: str | None = None, seed: int = 0, root=None, *, explorer: bool = True, progress: bool = True,
              reuse: bool = False, log: Callable[[str], None] = print, **_) -> dict[str, Path]:
    """Pre-train (or with ``reuse`` load) the ResNet, evaluate everything and write ``results/transfer.json``
    (rows) and ``results/transfer_explorer.json`` (the widget's grid, learning curves and projections)."""
    budget = resolve_budget(budget)
    t0 = time.perf_counter()
    log(f"Transfer, budget {budget!r}, seed {seed}, torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s) on {platform.machine()}")
    images = load_omniglot()
    if reuse and checkpoint_path(budget, seed, root).is_file():
        pre = load_pretrained(budget, seed, root)
    else:
        pre = pretrain(budget=budget, seed=seed, root=root, images=images, progress=progress, log=log)
    log(f"  {pre!r}")
    timings = {"pretrain_seconds": round(pre.history.seconds, 1)}
    t = time.perf_counter()
    rows, _ = evaluate_few_shot(pre, _meta_models(log), images=images, progress=progress)
    timings["few_shot_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    rows += oneshot_rows(pre)
    timings["oneshot_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    full_rows, extra = digits_full(pre, progress=progress, seed=0)
    rows += full_rows
    timings["digits_full_seconds"] = round(time.perf_counter() - t, 1)
    data = {"budget": budget, "seed": seed, "digits_full": extra}
    if explorer:
        t = time.perf_counter()
        data.update(explorer_grid(pre, progress=progress))
        timings["explorer_seconds"] = round(time.perf_counter() - t, 1)
    timings["total_seconds"] = round(time.perf_counter() - t0, 1)
    data["timings"] = timings
    for r in rows:
        r["pretrain_seconds"] = timings["pretrain_seconds"]
        r["pretrain_iterations"] = pre.history.steps_done
    paths = {"results": write_results(results_path(root), rows)}
    _write_explorer(explorer_path(root), data)
    paths["explorer"] = explorer_path(root)
    log(table(rows))
    log(f"  timings (s): {timings}")
    return paths


def evaluate(seed: int = 0, tasks: int | None = None, *, budget: str = "cpu", train_seed: int = 0, root=None,
             log: Callable[[str], None] = print, progress: bool = False) -> list[dict]:
    """Re-evaluate the shipped pre-trained ResNet (and chapter 7's networks) on fresh few-shot episodes."""
    pre = load_pretrained(budget, train_seed, root)
    rows, _ = evaluate_few_shot(pre, _meta_models(log), n_tasks=tasks, test_seed=seed, progress=progress)
    log(f"Pre-trained ResNet ({budget!r} budget, training seed {train_seed}) and chapter 7's networks on fresh "
        f"test episodes (test seed {seed}):")
    log(table(rows))
    return rows


def shipped_rows(budget: str = "cpu", seed: int = 0, root=None) -> list[dict]:
    """Rows of ``results/transfer.json`` for one budget and training seed (test seed 0)."""
    return select(read_results(results_path(root)), budget=budget, seed=seed, test_seed=0)


# ---- tables -------------------------------------------------------------------------------------------------

TABLE_TITLE = "query accuracy (%) on the same test episodes, mean ± 95% CI"


def table_cells(rows: Sequence[dict], settings: Sequence[str] | None = None, bn: str = "source",
                digits: int = 1) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)``: one line per classifier, one column per few-shot setting. ResNet rows use the
    BatchNorm statistics ``bn`` (``"source"`` or ``"re-estimated on digits"``, which exists for digits only)."""
    settings = [s for s in (settings or SETTINGS) if any(r["setting"] == s for r in rows)]
    present = {r["algorithm"] for r in rows if r["setting"] in settings}
    names = [f"ResNet {n}" for n in FEW_SHOT if f"ResNet {n}" in present]
    names += sorted(present - set(names))
    lines = []
    for name in names:
        cells = [name]
        for s in settings:
            found = [r for r in rows if r["algorithm"] == name and r["setting"] == s
                     and (not name.startswith("ResNet") or r.get("bn") == bn)]
            cells.append(f"{found[0]['mean']:.{digits}f} ± {found[0]['ci95']:.{digits}f}" if found else "–")
        if any(c != "–" for c in cells[1:]):
            lines.append(cells)
    return ["classifier", *settings], lines


def table(rows: Sequence[dict]) -> str:
    from ..results import text_table

    head, lines = table_cells(rows)
    out = [TABLE_TITLE, text_table(head, lines, align_left=1)]
    other = [r for r in rows if r["setting"] not in SETTINGS]
    for r in other:
        out.append(f"{r['algorithm']:<45} {r['setting']:<24} {r['metric']} {r['mean']:.1f} ± {r['ci95']:.1f}")
    return "\n".join(out)


def html_table(rows: Sequence[dict], settings: Sequence[str] | None = None, bn: str = "source", caption=None,
               notes=()):
    """A results table for notebooks and the website (see :func:`table_cells`). When every column is of one
    domain, the headers drop its name (the caption says it), which keeps the table narrow."""
    from .. import viz

    head, lines = table_cells(rows, settings, bn)
    domains = {SETTINGS[h][0] for h in head[1:]}
    if len(domains) == 1:
        head = [head[0]] + [h.split(" ", 1)[1] for h in head[1:]]
    return viz.html_table(head, lines, caption=caption or TABLE_TITLE, align_left=1, notes=notes)
