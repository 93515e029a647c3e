r"""Fine-tuning a pre-trained :class:`~metalearn_core.models.ResNet`: the transfer-learning half of the book.

One function, :func:`fine_tune`, covers every variant chapter 8 compares; the others are thin names for
common settings:

* **full fine-tuning** (``freeze_stages=0``): every parameter moves;
* **freezing the first n stages** (``freeze_stages=n``, n = 1..4): the stem and ``layer1..layer{n-1}`` keep
  their pre-trained values exactly (their output is computed once and cached when it cannot change);
* **linear probe** (``freeze_stages=5``, :func:`linear_probe`): only a new linear head is trained on the frozen
  features — logistic regression on the embedding;
* **per-layer learning rates** (``lrs={"head": 1e-2, "layer4": 1e-3, ...}``): each stage its own step size;
* **BatchNorm during fine-tuning** (``bn=``): ``"frozen"`` keeps the source statistics (PyTorch's ``eval()``
  for the BatchNorm layers), ``"reestimate"`` trains with batch statistics and re-estimates the running
  statistics on the target's training images (:func:`estimate_stats`) for every evaluation, ``"batch"``
  normalises every forward pass with its own batch, test batches included (transductive, like
  :class:`~metalearn_core.models.Conv4`);
* **early stopping** on a validation split (``x_val, y_val, patience``): the best parameters seen are kept.

Every run shows a progress bar and records a learning curve (:class:`FineTuneResult`, plotted by
:func:`metalearn_core.viz.plot_learning_curves`).

Few-shot classifiers on pre-trained features, for episodes (:func:`few_shot_predict`): nearest neighbour,
linear probe and fine-tuning.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .errors import ConfigError, DivergenceError, ShapeMismatchError, check_positive, check_positive_int
from .models import Params, ResNet, Stats

__all__ = ["BN_MODES", "FineTuneResult", "fine_tune", "linear_probe", "estimate_stats", "stage_groups",
           "evaluate_classifier", "nearest_neighbour", "few_shot_predict", "FEW_SHOT_METHODS"]

#: How BatchNorm is handled while fine-tuning (see the module docstring).
BN_MODES = ("frozen", "reestimate", "batch")
#: ``freeze_stages`` counts these, in order; ``freeze_stages=5`` leaves only the head: a linear probe.
STAGES = ResNet.stages


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns.

    Attributes:
        model: the network fine-tuned (a new head when ``classes`` was given).
        params, stats: its parameters and BatchNorm statistics after fine-tuning (the best ones seen on the
            validation split under early stopping); ``stats`` is ``None`` with ``bn="batch"``.
        bn: the BatchNorm mode, which :meth:`predict` follows.
        curve: the learning curve, lists over evaluations: ``step``, ``train_loss`` (mean over the steps since
            the previous evaluation), ``train_accuracy`` (same), and with a validation split ``val_loss`` and
            ``val_accuracy``.
        best_step: the step whose parameters were kept (the last one without a validation split).
        stopped_early: whether early stopping ended the run before ``steps``.
        trainable: names of the parameters that were trained.
        seconds: wall-clock time of the run.
    """

    model: ResNet
    params: Params
    stats: Stats | None
    bn: str
    curve: dict = field(default_factory=dict)
    best_step: int = 0
    stopped_early: bool = False
    trainable: tuple[str, ...] = ()
    seconds: float = 0.0

    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Logits for images ``x`` (with ``bn="batch"``, ``x`` is normalised as one batch: transductive)."""
        return _logits(self.model, self.params, self.stats, x, batch_size)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of ``x`` classified as ``y``."""
        return float((self.predict(x).argmax(-1) == y).float().mean())

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.curve.items() if v}
        shown = ", ".join(f"{k}={v:.3g}" for k, v in last.items() if k != "step")
        return (f"FineTuneResult({len(self.trainable)} trained tensors, bn={self.bn!r}, best step {self.best_step}"
                f"{', stopped early' if self.stopped_early else ''}; {shown})")


def stage_groups(model: ResNet) -> dict[str, list[str]]:
    """Parameter names by stage: ``{"stem": [...], "layer1": [...], ..., "layer4": [...], "head": [...]}``."""
    _check_resnet(model)
    groups: dict[str, list[str]] = {s: [] for s in (*STAGES, "head")}
    for name in model.param_shapes():
        groups[model.stage_of(name)].append(name)
    return groups


def _check_resnet(model) -> None:
    if not isinstance(model, ResNet):
        raise ConfigError(f"fine-tuning works stage by stage on a metalearn_core ResNet, got {model!r}; for other "
                          f"networks use the meta-learners' adapt()")


def estimate_stats(model: ResNet, params: Params, images: torch.Tensor, *, batch_size: int = 256) -> Stats:
    r"""BatchNorm statistics of ``params`` on ``images``: for every BatchNorm layer, the per-channel mean and
    variance of its inputs while the network normalises with batch statistics (what a BatchNorm layer in
    train mode sees), averaged over batches of ``batch_size`` images weighted by their sizes.

    This is "re-estimating" the statistics on new data (precise BatchNorm): nothing is trained.
    """
    _check_resnet(model)
    n = images.shape[0]
    if n < 2:
        raise ConfigError(f"estimating BatchNorm statistics needs at least 2 images (a variance), got {n}")
    batch_size = check_positive_int("batch_size", batch_size, minimum=2)
    total: Stats = {}
    used = 0
    for i in range(0, n, batch_size):
        xb = images[i:i + batch_size]
        if xb.shape[0] < 2:          # a last batch of one image has no variance: it is left out
            break
        moments = model.batch_moments(params, xb)
        for k, v in moments.items():
            total[k] = total.get(k, 0) + v * xb.shape[0]
        used += xb.shape[0]
    return {k: (v / used).detach() for k, v in total.items()}


def _logits(model: ResNet, params: Params, stats: Stats | None, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits without gradients: ``x`` as one batch with ``stats=None`` (batch statistics), else in chunks."""
    with torch.no_grad():
        if stats is None:
            return model(params, x)
        return torch.cat([model(params, x[i:i + batch_size], stats) for i in range(0, x.shape[0], batch_size)])


def evaluate_classifier(model: ResNet, params: Params, stats: Stats | None, x: torch.Tensor, y: torch.Tensor,
                        batch_size: int = 512) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of the network on ``(x, y)``; ``stats=None`` normalises ``x`` as one batch."""
    logits = _logits(model, params, stats, x, batch_size)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(-1) == y).float().mean())


def _check_data(model: ResNet, x, y, where: str, classes: int) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError(f"{where}: give images and labels as tensors")
    if x.dim() != 4 or tuple(x.shape[1:]) != model.in_features:
        raise ShapeMismatchError(f"{where} are images of shape {list(x.shape)}, but {model!r} takes "
                                 f"[n, {', '.join(map(str, model.in_features))}]")
    if y.shape != (x.shape[0],) or y.dtype != torch.long:
        raise ShapeMismatchError(f"{where}: give one int64 label per image, shape [{x.shape[0]}], got "
                                 f"{list(y.shape)} {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ShapeMismatchError(f"{where} has labels {int(y.min())}..{int(y.max())}, but the head has {classes} "
                                 f"classes (labels 0..{classes - 1}): pass classes={int(y.max()) + 1}")


def fine_tune(model: ResNet, params: Params, stats: Stats | None, x: torch.Tensor, y: torch.Tensor, *,
              classes: int | None = None, steps: int = 100, lr: float = 1e-3,
              lrs: Mapping[str, float] | None = None, freeze_stages: int = 0, bn: str = "frozen",
              optimizer: str = "adam", weight_decay: float = 0.0, batch_size: int | None = None,
              x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, eval_every: int | None = None,
              patience: int | None = None, seed: int = 0, progress: bool = True,
              desc: str = "fine-tuning") -> FineTuneResult:
    r"""Fine-tune a pre-trained ResNet on labelled images ``(x, y)``; see the module docstring for the options.

    Args:
        model, params, stats: the pre-trained network, its parameters and BatchNorm statistics (``stats`` may be
            ``None`` only with ``bn="batch"`` or ``"reestimate"``).
        classes: put a new head with this many classes (zero-initialised, so that before the first step every
            class is equally likely and the body receives gradients only once the head has moved); ``None``
            keeps the network's own head.
        steps: optimiser steps (each on one mini-batch, or on all of ``x`` when ``batch_size`` is ``None`` or
            at least ``len(x)``).
        lr: learning rate of every stage not named in ``lrs``.
        lrs: per-stage learning rates, keys among ``"stem"``, ``"layer1"``..``"layer4"``, ``"head"``.
        freeze_stages: 0 (nothing frozen) to 5 (only the head trains: a linear probe).
        bn: ``"frozen"``, ``"reestimate"`` or ``"batch"``.
        optimizer: ``"adam"`` or ``"sgd"`` (plain steps θ ← θ − lr·g, no momentum: what the tests check
            per-stage learning rates with).
        weight_decay: L2 penalty coefficient (added to the gradient of the trained parameters).
        x_val, y_val: a validation split, evaluated every ``eval_every`` steps (default: steps // 20); the
            parameters with the best validation accuracy (then loss) are returned.
        patience: stop after this many evaluations without improvement (needs a validation split).
        seed: seeds the mini-batch order.

    Raises:
        ConfigError: an unknown option, a learning rate that is not a positive number, a stage name that does
            not exist, early stopping without a validation split.
        DivergenceError: the training loss became NaN or infinite (the message names the learning rates).
    """
    start_time = time.perf_counter()
    _check_resnet(model)
    if bn not in BN_MODES:
        raise ConfigError(f"unknown bn={bn!r}: choose 'frozen' (keep the source statistics), 'reestimate' (train "
                          f"with batch statistics, re-estimate them on the target images) or 'batch' (batch "
                          f"statistics everywhere, test batches included)")
    if stats is None and bn == "frozen":
        raise ConfigError("bn='frozen' keeps the pre-trained BatchNorm statistics, but stats=None: pass the stats "
                          "saved with the pre-trained network, or use bn='reestimate'")
    model.check_params(params, "the pre-trained params")
    if stats is not None:
        model.check_stats(stats, "the pre-trained stats")
    if isinstance(freeze_stages, bool) or not isinstance(freeze_stages, int) or not 0 <= freeze_stages <= 5:
        raise ConfigError(f"freeze_stages must be 0 (full fine-tuning) .. 5 (linear probe: only the head trains), "
                          f"got {freeze_stages!r}")
    if optimizer not in ("adam", "sgd"):
        raise ConfigError(f"unknown optimizer {optimizer!r}: choose 'adam' or 'sgd'")
    steps = check_positive_int("steps", steps)
    lr = check_positive("lr (the fine-tuning learning rate)", lr, hint="e.g. lr=1e-3")
    lrs = dict(lrs or {})
    unknown = sorted(set(lrs) - {*STAGES, "head"})
    if unknown:
        raise ConfigError(f"lrs names unknown stage(s) {unknown}: the stages are {', '.join((*STAGES, 'head'))}")
    for k, v in lrs.items():
        lrs[k] = check_positive(f"lrs[{k!r}]", v)
    if weight_decay < 0 or not math.isfinite(weight_decay):
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")

    # the network to fine-tune: a fresh zero head for new classes
    if classes is not None:
        net = model.with_head(check_positive_int("classes", classes, minimum=2))
        body = {k: v for k, v in params.items() if not k.startswith("fc.")}
        like = next(iter(body.values()))
        head = {"fc.weight": torch.zeros(classes, model.embedding_size, dtype=like.dtype, device=like.device),
                "fc.bias": torch.zeros(classes, dtype=like.dtype, device=like.device)}
        params = {**body, **head}
    else:
        if model.classes is None:
            raise ConfigError("this network has no head: pass classes=N to fine-tune it with a new N-class head")
        net = model
    n_classes = net.classes
    _check_data(net, x, y, "the training images", n_classes)
    has_val = x_val is not None
    if has_val:
        if y_val is None:
            raise ConfigError("x_val was given without y_val: pass both to validate")
        _check_data(net, x_val, y_val, "the validation images", n_classes)
    if patience is not None:
        if not has_val:
            raise ConfigError("early stopping (patience) needs a validation split: pass x_val and y_val")
        patience = check_positive_int("patience", patience)
    eval_every = max(1, steps // 20) if eval_every is None else check_positive_int("eval_every", eval_every)
    n = x.shape[0]
    full_batch = batch_size is None or batch_size >= n
    if not full_batch:
        batch_size = check_positive_int("batch_size", batch_size, minimum=2 if bn != "frozen" else 1)

    groups = stage_groups(net)
    frozen_names = [k for s in STAGES[:freeze_stages] for k in groups[s]]
    trainable = tuple(k for k in net.param_shapes() if k not in frozen_names)
    params = {k: v.detach().clone() for k, v in params.items()}
    train_stats = stats if bn == "frozen" else None           # training forward: fixed or batch statistics
    # the frozen stages' output is the same at every step when their normalisation cannot change
    cache = freeze_stages > 0 and (bn == "frozen" or full_batch)
    if cache:
        with torch.no_grad():
            x_in = net.features(params, x, train_stats, stages=freeze_stages)
    else:
        x_in = x
    start = freeze_stages if cache else 0

    leaves = {k: params[k].requires_grad_(True) for k in trainable}
    # only the stages that run at each step go through the network (the frozen, cached ones do not)
    ran = {*STAGES[start:], "head"}
    running = {k: v for k, v in params.items() if net.stage_of(k) in ran and k not in leaves}
    running_stats = None if train_stats is None else {
        k: v for k, v in train_stats.items() if net.stage_of(k) in ran}
    param_groups = []
    for stage in (*STAGES, "head"):
        names = [k for k in groups[stage] if k in leaves]
        if names:
            param_groups.append({"params": [leaves[k] for k in names], "lr": lrs.get(stage, lr), "stage": stage})
    opt = (torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, foreach=True) if optimizer == "adam"
           else torch.optim.SGD(param_groups, lr=lr, weight_decay=weight_decay, foreach=True))

    def eval_stats(p):
        if bn == "frozen":
            return stats
        if bn == "batch":
            return None
        return estimate_stats(net, p, x)

    curve: dict[str, list[float]] = {"step": [], "train_loss": [], "train_accuracy": []}
    if has_val:
        curve.update(val_loss=[], val_accuracy=[])
    best_key, best_params, best_step, bad_evals = None, None, 0, 0
    generator = torch.Generator().manual_seed(seed)
    sums, count, stopped = [0.0, 0.0], 0, False
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, mininterval=0.5)
    step = 0
    # enable_grad: fine-tuning trains even when called under torch.no_grad() (e.g. by a scorer)
    try:
        with torch.enable_grad():
            for step in range(1, steps + 1):
                if full_batch:
                    xb, yb = x_in, y
                else:
                    idx = torch.randperm(n, generator=generator)[:batch_size]
                    xb, yb = x_in[idx], y[idx]
                logits = net({**running, **leaves}, xb, running_stats, start=start)
                loss = F.cross_entropy(logits, yb)
                value = float(loss.detach())
                if not math.isfinite(value):
                    named = ", ".join(f"{g['stage']} {g['lr']:g}" for g in param_groups)
                    raise DivergenceError(f"fine-tuning diverged at step {step} (loss {value}) with learning "
                                          f"rates {named}: lower lr (and lrs)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums[0] += value
                sums[1] += float((logits.argmax(-1) == yb).float().mean())
                count += 1
                bar.update(1)
                if step % eval_every == 0 or step == steps:
                    current = {**params, **{k: v.detach() for k, v in leaves.items()}}
                    curve["step"].append(step)
                    curve["train_loss"].append(sums[0] / count)
                    curve["train_accuracy"].append(sums[1] / count)
                    sums, count = [0.0, 0.0], 0
                    if has_val:
                        vl, va = evaluate_classifier(net, current, eval_stats(current), x_val, y_val)
                        curve["val_loss"].append(vl)
                        curve["val_accuracy"].append(va)
                        bar.set_postfix(val_acc=f"{va:.3f}", refresh=False)
                        key = (va, -vl)
                        if best_key is None or key > best_key:
                            best_key, best_step, bad_evals = key, step, 0
                            best_params = {k: v.clone() for k, v in current.items()}
                        else:
                            bad_evals += 1
                            if patience is not None and bad_evals >= patience:
                                stopped = True
                                break
    finally:
        bar.close()
    final = {**params, **{k: v.detach() for k, v in leaves.items()}}
    if has_val and best_params is not None:
        final = best_params
    else:
        best_step = step
    final = {k: v.detach().clone().requires_grad_(False) for k, v in final.items()}
    return FineTuneResult(net, final, eval_stats(final), bn, curve, best_step, stopped, trainable,
                          time.perf_counter() - start_time)


def linear_probe(model: ResNet, params: Params, stats: Stats | None, x: torch.Tensor, y: torch.Tensor, *,
                 classes: int, steps: int = 100, lr: float = 0.01, **kwargs) -> FineTuneResult:
    """A new linear head trained on the frozen network's features: ``fine_tune(..., freeze_stages=5)``.

    The embedding is computed once (with the source statistics when ``bn="frozen"``), so a probe costs
    little more than one forward pass.
    """
    return fine_tune(model, params, stats, x, y, classes=classes, steps=steps, lr=lr, freeze_stages=5, **kwargs)


def _embed(model, params, stats, x):
    with torch.no_grad():
        return model.embed(params, x, stats) if isinstance(model, ResNet) else model.embed(params, x)


def nearest_neighbour(model, params: Params, stats: Stats | None, x_support: torch.Tensor,
                      y_support: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """Labels of the query images: the label of the support image with the most similar embedding (cosine).

    Works for any network with ``embed`` (a :class:`~metalearn_core.models.ResNet`, which takes ``stats``, or a
    :class:`~metalearn_core.models.Conv4`, which normalises each set with its own batch statistics).
    """
    s = F.normalize(_embed(model, params, stats, x_support), dim=-1)
    q = F.normalize(_embed(model, params, stats, x_query), dim=-1)
    return y_support[(q @ s.T).argmax(-1)]


#: The few-shot classifiers :func:`few_shot_predict` knows.
FEW_SHOT_METHODS = ("nearest neighbour", "linear probe", "fine-tune")


def few_shot_predict(method: str, model: ResNet, params: Params, stats: Stats | None, x_support: torch.Tensor,
                     y_support: torch.Tensor, x_query: torch.Tensor, *, ways: int | None = None,
                     **options) -> torch.Tensor:
    """Predicted labels of one episode's query images by a classifier built on the pre-trained network.

    * ``"nearest neighbour"``: :func:`nearest_neighbour` on the embeddings;
    * ``"linear probe"``: :func:`linear_probe` on the support set (``options`` e.g. ``steps``, ``lr``);
    * ``"fine-tune"``: :func:`fine_tune` on the support set (``options``: ``freeze_stages``, ``steps``, ``lr``,
      ``lrs``, ``bn``...).
    """
    if method not in FEW_SHOT_METHODS:
        raise ConfigError(f"unknown few-shot method {method!r}: choose one of {', '.join(FEW_SHOT_METHODS)}")
    if method == "nearest neighbour":
        return nearest_neighbour(model, params, stats, x_support, y_support, x_query)
    ways = int(y_support.max()) + 1 if ways is None else ways
    options.setdefault("progress", False)
    if method == "linear probe":
        result = linear_probe(model, params, stats, x_support, y_support, classes=ways, **options)
    else:
        result = fine_tune(model, params, stats, x_support, y_support, classes=ways, **options)
    return result.predict(x_query).argmax(-1)
