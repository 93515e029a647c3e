"""Functional models: parameters are a plain ``dict[str, Tensor]``.

A model object holds only its *architecture*; the weights travel separately, so an inner loop can produce
new weights θ' without touching any module state:

>>> model = MLP((1, 40, 40, 1))
>>> params = model.init(seed=0)             # {"0.weight": ..., "0.bias": ..., ...}
>>> y = model(params, torch.zeros(5, 1))    # torch.func.functional_call under the hood

This is the interface every algorithm in :mod:`metalearn_core.algorithms` uses.

Two kinds of task data are checked by :meth:`FunctionalModel.check_input`:

* regression (:class:`MLP`, :class:`LinearModel`): inputs ``[..., in_features]`` and float targets
  ``[..., out_features]``;
* classification of images (:class:`Conv4`): inputs ``[..., C, H, W]`` (``in_features`` is the tuple
  ``(C, H, W)``) and integer class labels ``[...]`` in ``0..out_features-1``, one per example (no feature
  dimension), as the cross-entropy loss expects.
"""

from __future__ import annotations

import abc

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .errors import ConfigError, ShapeMismatchError, check_positive_int

__all__ = ["FunctionalModel", "MLP", "LinearModel", "Conv4", "ResNet", "WithMetaParameters", "Params", "Stats"]

Params = dict[str, torch.Tensor]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class FunctionalModel(abc.ABC):
    """Base class: wraps an ``nn.Module`` used only as an architecture for ``functional_call``.

    Subclasses set ``self.module``, ``self.in_features``, ``self.out_features`` and implement
    :meth:`spec` (a JSON-able description used to check checkpoints).

    ``in_features`` is the size of one input example: an ``int`` for vectors, a tuple such as ``(1, 28, 28)``
    for images. ``out_features`` is the number of outputs (regression values or class logits); ``None`` for
    a network that only embeds its inputs (e.g. ``Conv4(ways=None)`` for Prototypical Networks).

    ``vmap_on_cpu`` says whether mapping over the tasks of a batch with ``torch.func.vmap`` is faster than a
    Python loop on a CPU for this architecture (measured: yes for small MLPs, no for :class:`Conv4`); the
    learners follow it unless told otherwise (their ``vectorize`` argument).
    """

    module: nn.Module
    in_features: int | tuple[int, ...]
    out_features: int | None
    vmap_on_cpu: bool = True

    def init(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
        """Fresh parameters, initialised as ``nn.Module`` would, reproducibly from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in self.module.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            return {k: v.detach().clone().to(dtype) for k, v in self.module.named_parameters()}

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """f_θ(x) with θ = ``params``."""
        return functional_call(self.module, params, (x,))

    __call__ = forward

    @abc.abstractmethod
    def spec(self) -> dict:
        """A JSON-able description of the architecture (checked when a checkpoint is loaded)."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.module.named_parameters()}

    def num_params(self) -> int:
        return sum(v.numel() for v in self.module.parameters())

    def network_names(self) -> tuple[str, ...]:
        """Names of the network's own parameters: the ones an inner loop adapts (see :class:`WithMetaParameters`)."""
        return tuple(self.param_shapes())

    def check_params(self, params: Params, where: str = "params") -> None:
        """Raise :class:`ShapeMismatchError` unless ``params`` has exactly this model's names and shapes."""
        expected = self.param_shapes()
        got = {k: tuple(v.shape) for k, v in params.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
            detail = "; ".join(filter(None, [
                f"missing {missing}" if missing else "",
                f"unexpected {extra}" if extra else "",
                ", ".join(f"{k} has shape {got[k]} instead of {expected[k]}" for k in wrong),
            ]))
            raise ShapeMismatchError(f"{where} do not fit {self!r}: {detail}")

    def check_family(self, family) -> None:
        """Raise :class:`ShapeMismatchError` if this model's input/output sizes differ from the family's.

        A model without outputs of its own (``out_features is None``, an embedding network) is only checked
        for its inputs: the number of classes is then a property of the episodes, not of the network.
        """
        outputs_differ = self.out_features is not None and family.out_features != self.out_features
        if family.in_features != self.in_features or outputs_differ:
            if isinstance(self.in_features, int) and isinstance(family.in_features, int):
                raise ShapeMismatchError(
                    f"{self!r} maps {self.in_features} input feature(s) to {self.out_features} output(s), but "
                    f"{family!r} has tasks with {family.in_features} input(s) and {family.out_features} output(s): "
                    f"build the model with in_features={family.in_features}, out_features={family.out_features}")
            raise ShapeMismatchError(
                f"{self!r} takes inputs of shape {_shape(self.in_features)} and produces {self.out_features} "
                f"output(s), but {family!r} has tasks with inputs of shape {_shape(family.in_features)} and "
                f"{family.out_features} output(s): "
                f"{self._fix_hint(in_features=family.in_features, out_features=family.out_features)}")

    def check_input(self, x: torch.Tensor, y: torch.Tensor | None = None, where: str = "task data") -> None:
        """Raise :class:`ShapeMismatchError` if ``x`` (and ``y``) do not fit this model.

        * Inputs: the trailing dimensions of ``x`` must be ``in_features`` (one number for vectors, the tuple
          ``(C, H, W)`` for images); the dimensions before them are *batch dimensions* (tasks, examples).
        * Regression targets (floating point): ``[*batch, out_features]``.
        * Class labels (integer): ``[*batch]``, one label per example, dtype ``int64`` (what the cross-entropy
          loss takes), with values in ``0..out_features-1``. Floating-point labels are refused with a hint to
          convert them (``y.long()``).
        """
        sizes = _sizes(self.in_features)
        n = len(sizes)
        if isinstance(self.in_features, int):
            if x.shape[-1] != self.in_features:
                raise ShapeMismatchError(
                    f"{where} has inputs with {x.shape[-1]} feature(s) but {self!r} expects {self.in_features}: "
                    f"build the model with in_features={x.shape[-1]}")
        elif x.dim() <= n or tuple(x.shape[-n:]) != sizes:
            got = tuple(x.shape[-n:]) if x.dim() >= n else tuple(x.shape)
            raise ShapeMismatchError(
                f"{where} has inputs of shape {list(x.shape)}, i.e. examples of shape {_shape(got)}, but {self!r} "
                f"expects [..., {', '.join(map(str, sizes))}] (examples of shape {_shape(sizes)} after at least "
                f"one batch dimension): {self._fix_hint(in_features=got)}")
        if y is None:
            return
        batch = tuple(x.shape[:-n])
        if y.dtype == torch.bool or not (y.is_floating_point() or y.is_complex()):
            self._check_labels(y, batch, where)
        elif self.out_features is None:
            raise ShapeMismatchError(
                f"{where} has floating-point targets of shape {list(y.shape)}, but {self!r} has no outputs of its "
                f"own (it only embeds its inputs): it takes integer class labels (convert them with y.long())")
        elif y.dim() == len(batch) and self.out_features > 1:
            raise ShapeMismatchError(
                f"{where} has floating-point targets of shape {list(y.shape)}, one number per example: class "
                f"labels must be integers (convert them with y.long()); regression targets need a last dimension "
                f"of {self.out_features} output(s), shape {list(batch) + [self.out_features]}")
        elif y.shape[-1] != self.out_features:
            raise ShapeMismatchError(
                f"{where} has targets with {y.shape[-1]} output(s) but {self!r} produces {self.out_features}: "
                f"{self._fix_hint(out_features=y.shape[-1])}")

    def _check_labels(self, y: torch.Tensor, batch: tuple[int, ...], where: str) -> None:
        """Integer class labels: one per example, int64, in 0..out_features-1."""
        if tuple(y.shape) != batch:
            raise ShapeMismatchError(
                f"{where} has class labels of shape {list(y.shape)} but its inputs hold examples arranged as "
                f"{list(batch)}: give one integer label per example, shape {list(batch)}")
        if y.dtype != torch.long:
            raise ShapeMismatchError(
                f"{where} has class labels of dtype {y.dtype}, but the cross-entropy loss takes int64 labels: "
                f"convert them with y.long()")
        if y.numel() == 0:
            return
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise ShapeMismatchError(f"{where} has a negative class label ({lo}): labels must be 0..N-1 for N classes")
        if self.out_features is not None and hi >= self.out_features:
            raise ShapeMismatchError(
                f"{where} has class labels up to {hi}, but {self!r} produces {self.out_features} logits (labels "
                f"0..{self.out_features - 1}): {self._fix_hint(out_features=hi + 1)}")

    def _fix_hint(self, in_features=None, out_features=None) -> str:
        """How to build a model that fits, as advice in an error message (subclasses name their own arguments)."""
        parts = []
        if in_features is not None:
            parts.append(f"in_features={in_features}")
        if out_features is not None:
            parts.append(f"out_features={out_features}")
        return f"build the model with {', '.join(parts)}"


def _sizes(in_features) -> tuple[int, ...]:
    return (in_features,) if isinstance(in_features, int) else tuple(in_features)


def _shape(in_features) -> str:
    return "[" + ", ".join(map(str, _sizes(in_features))) + "]"


class MLP(FunctionalModel):
    """A fully connected network, e.g. ``MLP((1, 40, 40, 1))`` is the MAML paper's sinusoid regressor.

    Args:
        sizes: layer widths from input to output (at least two entries).
        activation: ``"relu"`` (default) or ``"tanh"`` between layers (none after the last).
    """

    def __init__(self, sizes: Sequence[int] = (1, 40, 40, 1), activation: str = "relu"):
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ConfigError(f"MLP sizes need at least an input and an output width, got {sizes}")
        sizes = tuple(check_positive_int("MLP layer width", s) for s in sizes)
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}: choose one of {', '.join(_ACTIVATIONS)}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.module = nn.Sequential(*layers)
        self.sizes, self.activation = sizes, activation
        self.in_features, self.out_features = sizes[0], sizes[-1]

    def spec(self) -> dict:
        return {"class": "MLP", "sizes": list(self.sizes), "activation": self.activation}

    def __repr__(self) -> str:
        return f"MLP({'-'.join(map(str, self.sizes))}, {self.activation})"


class LinearModel(FunctionalModel):
    r"""The linear model :math:`f_\theta(x) = x^\top \theta` (no bias), one parameter ``"w"`` of shape [d].

    With :class:`~metalearn_core.tasks.QuadraticTasks` its loss is exactly quadratic in θ.
    """

    def __init__(self, in_features: int = 2):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = 1
        self.module = _Linear(self.in_features)

    def init(self, seed: int = 0, dtype: torch.dtype = torch.float32, value=None) -> Params:
        """Zero weights by default (or ``value``); ``seed`` is accepted for a uniform interface."""
        if value is None:
            return {"w": torch.zeros(self.in_features, dtype=dtype)}
        w = torch.as_tensor(value, dtype=dtype).reshape(-1).clone()
        self.check_params({"w": w}, "initial value")
        return {"w": w}

    def spec(self) -> dict:
        return {"class": "LinearModel", "in_features": self.in_features}

    def __repr__(self) -> str:
        return f"LinearModel(in_features={self.in_features})"


class _Linear(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return (x @ self.w)[..., None]


class _ImageNetwork(FunctionalModel):
    """What the image networks (:class:`Conv4`, :class:`ResNet`) share: the check that a batch holds images of
    the network's shape, and the hint naming the constructor arguments that would fit other images. Subclasses
    set ``_images_note`` (appended to the batch description), ``_square_note`` and ``_outputs_arg`` (the name of
    their number-of-outputs argument)."""

    _images_note = ""
    _square_note = "square images [channels, size, size]"
    _outputs_arg = "out_features"

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_features:
            raise ShapeMismatchError(
                f"{self!r} takes a batch of images [n, {', '.join(map(str, self.in_features))}]{self._images_note}, "
                f"got a tensor of shape {list(x.shape)}"
                + (f": {self._fix_hint(in_features=tuple(x.shape[1:]))}" if x.dim() == 4 else ""))

    def _fix_hint(self, in_features=None, out_features=None) -> str:
        name = type(self).__name__
        args = []
        if in_features is not None:
            sizes = _sizes(in_features)
            if len(sizes) == 3 and sizes[1] == sizes[2]:
                args += [f"in_channels={sizes[0]}", f"image_size={sizes[1]}"]
            else:
                return f"{name} takes {self._square_note}, not {_shape(sizes)}; reshape the inputs"
        if out_features is not None:
            args.append(f"{self._outputs_arg}={out_features}")
        return f"build {name}({', '.join(args)})"


class Conv4(_ImageNetwork):
    r"""The four-block convolutional network of few-shot image classification (Vinyals et al., 2016; the MAML
    paper's Omniglot and MiniImagenet network, Finn et al., 2017; the ProtoNets encoder, Snell et al., 2017).

    Each block is a 3×3 convolution with ``width`` filters (padding 1), batch normalisation, ReLU and a 2×2
    max-pooling, which halves the image (28 → 14 → 7 → 3 → 1 pixels for Omniglot). The features of the last
    block are flattened and a linear *head* maps them to ``ways`` logits, one per class of the episode.

    **Batch normalisation uses the statistics of the batch it is given**, never running averages: each
    channel is normalised by the mean and variance over the examples and pixels of the current forward pass,
    then scaled and shifted by the learnable ``norm.weight`` (γ) and ``norm.bias`` (β), which are ordinary
    parameters, adapted by the inner loop like the convolutions. :func:`batch_stat_norm` writes the formula
    out; the network calls PyTorch's fused ``F.batch_norm(x, None, None, γ, β, training=True)``, which
    computes the same numbers about twice as fast, is differentiable to second order by ``torch.func.grad``
    and maps over tasks with ``vmap`` (each task normalised with its own statistics). This is what MAML's
    code does, and it has a consequence at test time: the prediction for one query example depends on the
    other examples in the same forward pass. Feeding the whole query set at once is *transductive*; see
    :meth:`metalearn_core.algorithms.MetaLearner.predict` for the non-transductive protocol.

    On a CPU the learners loop over the tasks of a batch rather than ``vmap`` them (``vmap_on_cpu = False``):
    measured on one thread, a meta-step of 32 Omniglot episodes is about three times faster that way.

    Args:
        in_channels: channels of the input images (1 for Omniglot).
        ways: N, the number of classes (logits) per episode; ``None`` builds the network without a head, whose
            output is the embedding (what Prototypical Networks use: the number of classes is then a property
            of the episode, not of the network).
        width: filters per convolution (64 in the papers; fewer make a faster network for CPU budgets).
        image_size: side of the square input images (28 for Omniglot, 84 for MiniImagenet).
        downsample: ``"maxpool"`` (default: the 2×2 max-pooling above) or ``"stride"``: stride-2 convolutions
            and no pooling, which is what the MAML paper used for Omniglot (28 → 14 → 7 → 4 → 2 pixels).

    Parameters are named ``blocks.{i}.conv.weight``, ``blocks.{i}.conv.bias``, ``blocks.{i}.norm.weight``,
    ``blocks.{i}.norm.bias`` for blocks i = 0..3, and ``head.weight``, ``head.bias``.

    >>> net = Conv4(ways=5, width=64)
    >>> params = net.init(seed=0)
    >>> net(params, torch.zeros(10, 1, 28, 28)).shape
    torch.Size([10, 5])
    """

    blocks = 4
    vmap_on_cpu = False

    def __init__(self, in_channels: int = 1, ways: int | None = 5, width: int = 64, image_size: int = 28,
                 downsample: str = "maxpool"):
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.ways = None if ways is None else check_positive_int(
            "ways (the number of classes, Conv4's outputs)", ways, minimum=2,
            hint="a classifier needs two classes; use ways=None for an embedding network")
        self.width = check_positive_int("width (filters per convolution)", width)
        self.image_size = check_positive_int("image_size", image_size)
        if downsample not in ("maxpool", "stride"):
            raise ConfigError(f"unknown downsample {downsample!r}: choose 'maxpool' (2x2 max-pooling after each "
                              f"block) or 'stride' (stride-2 convolutions, the MAML paper's Omniglot network)")
        self.downsample = downsample
        side = self.image_size
        for _ in range(self.blocks):
            side = side // 2 if downsample == "maxpool" else (side + 1) // 2
            if side < 1:
                raise ConfigError(f"image_size={image_size} is too small for Conv4's four halvings: use images "
                                  f"of at least 16x16 pixels")
        self.feature_side = side
        self.embedding_size = self.width * side * side
        self.in_features = (self.in_channels, self.image_size, self.image_size)
        self.out_features = self.ways
        self.module = _Conv4Module(self.in_channels, self.width, self.ways, self.embedding_size, downsample)

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, ways]`` for a batch of images ``x`` ``[n, C, H, W]`` (the embedding if ``ways=None``).

        Batch normalisation uses the statistics of these ``n`` images: pass one task's images at a time
        (map over tasks with ``vmap``), never several tasks flattened together.
        """
        self._check_images(x)
        return functional_call(self.module, params, (x,))

    __call__ = forward

    def embed(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The features before the head, ``[n, embedding_size]``, for images ``x`` ``[n, C, H, W]``."""
        self._check_images(x)
        return functional_call(self.module, params, (x,), {"embed_only": True})

    _images_note = " (one task's examples; map over tasks with vmap)"
    _square_note = "square images of shape [channels, size, size]"
    _outputs_arg = "ways"

    def spec(self) -> dict:
        return {"class": "Conv4", "in_channels": self.in_channels, "ways": self.ways, "width": self.width,
                "image_size": self.image_size, "downsample": self.downsample}

    def __repr__(self) -> str:
        extra = "" if self.downsample == "maxpool" else ", downsample='stride'"
        return (f"Conv4(in_channels={self.in_channels}, ways={self.ways}, width={self.width}, "
                f"image_size={self.image_size}{extra})")


def batch_stat_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Batch normalisation with the statistics of ``x`` itself, ``[n, C, H, W]``:

    .. math:: \hat x_{ncij} = \gamma_c\,\frac{x_{ncij} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c,

    with :math:`\mu_c` and :math:`\sigma_c^2` the mean and (biased) variance of channel c over the n examples
    and all pixels. Equal to ``torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True)``
    (which :class:`Conv4` calls, being faster), written out so that every step is visible.
    """
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


class _BatchStatNorm(nn.Module):
    """Batch normalisation without running statistics (:func:`batch_stat_norm`, fused); γ=1, β=0 at init."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x):
        # no running mean/variance: training=True normalises with the statistics of x itself
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: str):
        super().__init__()
        self.pool = downsample == "maxpool"
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=1 if self.pool else 2, padding=1)
        self.norm = _BatchStatNorm(c_out)

    def forward(self, x):
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class _Conv4Module(nn.Module):
    def __init__(self, c_in: int, width: int, ways: int | None, embedding_size: int, downsample: str):
        super().__init__()
        self.blocks = nn.Sequential(*[_ConvBlock(c_in if i == 0 else width, width, downsample) for i in range(4)])
        self.head = nn.Linear(embedding_size, ways) if ways is not None else None

    def forward(self, x, embed_only: bool = False):
        z = self.blocks(x).flatten(1)
        if embed_only or self.head is None:
            return z
        return self.head(z)


class WithMetaParameters(FunctionalModel):
    """A network plus meta-parameters that are learned in the outer loop but are not part of the network.

    Meta-SGD's per-parameter inner learning rates and the learned update rule's small network are such
    meta-parameters: they travel in the same parameter dict as the network's weights (so the one training
    loop, checkpoints and evaluation treat them like any other parameter), under names with a prefix
    (``"lr.0.weight"``, ``"update.w1"``). The forward pass uses only the network's entries;
    :meth:`split` separates the two.

    Args:
        base: the network, any :class:`FunctionalModel`.
        extra: the meta-parameters' names and shapes.
        init_extra: ``init_extra(network_params, seed, dtype) -> dict`` gives their initial values.
        tag: what the meta-parameters are (part of :meth:`spec`, so a checkpoint of plain MAML does not load
            into Meta-SGD and vice versa).
    """

    def __init__(self, base: FunctionalModel, extra: dict[str, tuple[int, ...]], init_extra, tag: str):
        if not isinstance(base, FunctionalModel):
            raise TypeError(f"base must be a metalearn_core FunctionalModel, got {type(base).__name__}")
        clash = sorted(set(extra) & set(base.param_shapes()))
        if clash:
            raise ConfigError(f"meta-parameter names {clash} clash with the network's parameter names")
        self.base = base
        self.extra_shapes = {k: tuple(v) for k, v in extra.items()}
        self._init_extra = init_extra
        self.tag = str(tag)
        self.module = base.module
        self.in_features, self.out_features = base.in_features, base.out_features
        self.vmap_on_cpu = base.vmap_on_cpu

    def init(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
        params = self.base.init(seed, dtype)
        extra = self._init_extra(params, seed, dtype)
        return {**params, **{k: extra[k].to(dtype) for k in self.extra_shapes}}

    def split(self, params: Params) -> tuple[Params, Params]:
        """``(network parameters, meta-parameters)`` of a full parameter dict."""
        return ({k: v for k, v in params.items() if k not in self.extra_shapes},
                {k: v for k, v in params.items() if k in self.extra_shapes})

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.split(params)[0], x)

    __call__ = forward

    def embed(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self.base.embed(self.split(params)[0], x)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.base.param_shapes(), **self.extra_shapes}

    def network_names(self) -> tuple[str, ...]:
        return self.base.network_names()

    def num_params(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.param_shapes().values())

    def check_input(self, x, y=None, where: str = "task data") -> None:
        self.base.check_input(x, y, where)

    def _fix_hint(self, in_features=None, out_features=None) -> str:
        return self.base._fix_hint(in_features, out_features)

    def spec(self) -> dict:
        return {"class": "WithMetaParameters", "tag": self.tag, "base": self.base.spec(),
                "extra": {k: list(v) for k, v in self.extra_shapes.items()}}

    def __repr__(self) -> str:
        return f"{self.base!r} + {self.tag}"


# ---- ResNet -------------------------------------------------------------------------------------------------

#: BatchNorm statistics of a :class:`ResNet`: ``"<norm>.running_mean"`` / ``"<norm>.running_var"`` -> tensor.
Stats = dict[str, torch.Tensor]


class ResNet(_ImageNetwork):
    r"""A residual network (He et al., 2016) of basic blocks, for transfer learning (chapter 8).

    Layout (torchvision's names, so that ``torchvision.models.resnet18``'s weights load with
    :meth:`from_torchvision`):

    * a *stem*: ``conv1``, ``bn1``, ReLU and a max-pooling that halves the image: a 3×3 convolution of stride 1
      and 2×2 pooling for small images such as Omniglot's 28×28 (``stem="small"``: 28 → 14 → 14, 7, 4, 2 pixels
      in the four stages), or ResNet-18's 7×7 convolution of stride 2 and 3×3 pooling (``stem="imagenet"``);
    * four *stages* ``layer1..layer4`` of ``blocks[i]`` basic blocks with ``width``, 2·width, 4·width and 8·width
      channels; the first block of stages 2–4 halves the image (stride 2). A basic block computes
      :math:`\mathrm{relu}(\mathrm{bn}_2(\mathrm{conv}_2(\mathrm{relu}(\mathrm{bn}_1(\mathrm{conv}_1 x)))) + s(x))`,
      with :math:`s` the identity, or a 1×1 convolution and BatchNorm (``downsample``) where the shape changes;
    * global average pooling to an ``8·width`` *embedding* (:meth:`embed`) and a linear head ``fc`` to
      ``classes`` logits (``classes=None``: no head, the output is the embedding).

    ``blocks=(2, 2, 2, 2)``, ``width=64`` and ``stem="imagenet"`` is ResNet-18.

    **Two kinds of state.** ``params`` (:meth:`init`) are the trainable tensors. *BatchNorm statistics*
    (``stats``, :meth:`init_stats`: a running mean and variance per channel of every ``bn``) are not trained by
    gradients; they are estimated from data (:func:`metalearn_core.finetune.estimate_stats`). The forward pass
    takes them as an argument:

    * ``model(params, x)`` (``stats=None``) normalises every channel with the statistics of the batch ``x``
      itself, like :class:`Conv4` and like ``model.train()`` in PyTorch (without updating any running average);
    * ``model(params, x, stats)`` normalises with the given fixed statistics, like ``model.eval()``: each example's
      output then depends on that example only.

    The same architecture is an ordinary ``nn.Module`` too: :meth:`as_module` returns one with the parameters and
    statistics loaded (train mode updates its running statistics, eval mode uses them, as PyTorch's BatchNorm
    does), and :meth:`from_module` reads them back.

    Args:
        in_channels: channels of the input images (1 for Omniglot and digits, 3 for colour images).
        classes: logits of the head (the number of classes it is trained on), or ``None`` for an embedding network.
        width: channels of the first stage (64 in ResNet-18; fewer for CPU budgets).
        blocks: basic blocks in each of the four stages.
        image_size: side of the square input images.
        stem: ``"small"`` (3×3 convolution, stride 1) or ``"imagenet"`` (7×7, stride 2, and max-pooling).

    >>> net = ResNet(classes=10, width=8, blocks=(1, 1, 1, 1))
    >>> params, stats = net.init(seed=0), net.init_stats()
    >>> net(params, torch.zeros(4, 1, 28, 28), stats).shape
    torch.Size([4, 10])
    """

    vmap_on_cpu = False
    stages = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, in_channels: int = 1, classes: int | None = None, width: int = 16,
                 blocks: Sequence[int] = (1, 1, 1, 1), image_size: int = 28, stem: str = "small"):
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.classes = None if classes is None else check_positive_int(
            "classes (the head's number of logits)", classes, minimum=2,
            hint="a classifier needs two classes; use classes=None for an embedding network")
        self.width = check_positive_int("width (channels of the first stage)", width)
        blocks = tuple(blocks) if isinstance(blocks, (list, tuple)) else blocks
        if not isinstance(blocks, tuple) or len(blocks) != 4:
            raise ConfigError(f"blocks must give the number of basic blocks of each of the 4 stages, e.g. (1, 1, 1, 1) "
                              f"or ResNet-18's (2, 2, 2, 2); got {blocks!r}")
        self.blocks = tuple(check_positive_int(f"blocks[{i}]", b) for i, b in enumerate(blocks))
        self.image_size = check_positive_int("image_size", image_size)
        if stem not in ("small", "imagenet"):
            raise ConfigError(f"unknown stem {stem!r}: choose 'small' (3x3 convolution and 2x2 max-pooling, for images "
                              f"such as 28x28 Omniglot) or 'imagenet' (ResNet-18's 7x7 stride-2 convolution and "
                              f"max-pooling)")
        self.stem = stem
        smallest = 16 if stem == "small" else 32
        if self.image_size < smallest:
            raise ConfigError(f"image_size={image_size} is too small for a ResNet with stem={stem!r}: it halves the "
                              f"image {4 if stem == 'small' else 5} times; use images of at least {smallest}x{smallest}")
        self.embedding_size = 8 * self.width
        self.in_features = (self.in_channels, self.image_size, self.image_size)
        self.out_features = self.classes
        self.module = _ResNetModule(self.in_channels, self.width, self.blocks, self.classes, stem)

    # -- state ----------------------------------------------------------------------------------------------
    def norm_names(self) -> tuple[str, ...]:
        """Names of the BatchNorm layers, e.g. ``"bn1"``, ``"layer1.0.bn2"``, ``"layer2.0.downsample.1"``."""
        return tuple(n for n, m in self.module.named_modules() if isinstance(m, _Norm))

    def init_stats(self, dtype: torch.dtype = torch.float32) -> Stats:
        """BatchNorm statistics of an untrained network: mean 0 and variance 1 for every channel."""
        out = {}
        for name, m in self.module.named_modules():
            if isinstance(m, _Norm):
                out[f"{name}.running_mean"] = torch.zeros(m.num_features, dtype=dtype)
                out[f"{name}.running_var"] = torch.ones(m.num_features, dtype=dtype)
        return out

    def check_stats(self, stats: Stats, where: str = "stats") -> None:
        """Raise :class:`ShapeMismatchError` unless ``stats`` are this network's BatchNorm statistics."""
        expected = {k: tuple(v.shape) for k, v in self.init_stats().items()}
        got = {k: tuple(v.shape) for k, v in stats.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))[:3]
            wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])[:3]
            raise ShapeMismatchError(
                f"{where} are not the BatchNorm statistics of {self!r}"
                + (f": missing {missing}" if missing else "") + (f"; wrong shapes for {wrong}" if wrong else "")
                + ": estimate them for this network with metalearn_core.finetune.estimate_stats")

    def stage_of(self, name: str) -> str:
        """The stage a parameter belongs to: ``"stem"``, ``"layer1"``..``"layer4"`` or ``"head"``."""
        first = name.split(".")[0]
        if first in ("conv1", "bn1"):
            return "stem"
        if first == "fc":
            return "head"
        return first

    # -- forward --------------------------------------------------------------------------------------------
    def _call(self, params: Params, x: torch.Tensor, stats: Stats | None, embed_only: bool, start: int = 0,
              stop: int = 5) -> torch.Tensor:
        if start == 0:
            self._check_images(x)
        if start == 5:                  # x is the embedding: only the head is left (skips functional_call's cost)
            return x if (embed_only or self.classes is None) else F.linear(x, params["fc.weight"], params["fc.bias"])
        kwargs = {"embed_only": embed_only, "mode": "batch" if stats is None else "fixed", "start": start,
                  "stop": stop}
        state = params if stats is None else {**params, **stats}
        return functional_call(self.module, state, (x,), kwargs, strict=False)

    def forward(self, params: Params, x: torch.Tensor, stats: Stats | None = None, *, start: int = 0) -> torch.Tensor:
        """Logits ``[n, classes]`` (the embedding if ``classes=None``) for images ``x`` ``[n, C, H, W]``.

        ``stats=None``: BatchNorm with the statistics of this batch; otherwise with the fixed ``stats``.
        ``start=k`` takes ``x`` to be the output of the first k stages (:meth:`features`) and runs the rest.
        """
        return self._call(params, x, stats, False, start)

    __call__ = forward

    def embed(self, params: Params, x: torch.Tensor, stats: Stats | None = None, *, start: int = 0) -> torch.Tensor:
        """The pooled features before the head, ``[n, 8·width]``."""
        return self._call(params, x, stats, True, start)

    def features(self, params: Params, x: torch.Tensor, stats: Stats | None = None, *, stages: int) -> torch.Tensor:
        """The feature maps after the first ``stages`` stages (0: the images themselves; 1: the stem; 5: all of
        them, pooled: the embedding).

        ``forward(params, features(params, x, stats, stages=k), stats, start=k)`` equals ``forward(params, x,
        stats)`` for fixed ``stats``: fine-tuning with the first k stages frozen computes their output once.
        """
        if not isinstance(stages, int) or not 0 <= stages <= 5:
            raise ConfigError(f"stages must be 0..5 (stem, layer1..layer4), got {stages!r}")
        if stages == 0:
            return x
        return self._call(params, x, stats, True, 0, stages)

    def batch_moments(self, params: Params, x: torch.Tensor, stats: Stats | None = None) -> Stats:
        """Mean and (unbiased) variance of every BatchNorm layer's input channels for the batch ``x``.

        With ``stats=None`` the network runs on batch statistics (each layer sees inputs normalised by the
        batch's own moments, which is what a BatchNorm in train mode would record); otherwise the inputs of
        later layers are computed with the given ``stats``.
        """
        record: Stats = {}
        hooks = []
        for name, m in self.module.named_modules():
            if isinstance(m, _Norm):
                def hook(mod, args, name=name):
                    z = args[0].detach()
                    record[f"{name}.running_mean"] = z.mean(dim=(0, 2, 3))
                    record[f"{name}.running_var"] = z.var(dim=(0, 2, 3), unbiased=True)
                hooks.append(m.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                self.forward(params, x, stats)
        finally:
            for h in hooks:
                h.remove()
        return record

    _images_note = ""
    _square_note = "square images [channels, size, size]"
    _outputs_arg = "classes"

    # -- as an ordinary module ------------------------------------------------------------------------------
    def as_module(self, params: Params, stats: Stats | None = None) -> nn.Module:
        """A standalone ``nn.Module`` copy of this network with ``params`` and ``stats`` loaded.

        It behaves like any PyTorch network: ``.train()`` normalises with batch statistics and updates the
        running ones (momentum 0.1), ``.eval()`` uses the running statistics.
        """
        import copy

        self.check_params(params)
        stats = self.init_stats() if stats is None else stats
        self.check_stats(stats)
        module = copy.deepcopy(self.module)
        missing, unexpected = module.load_state_dict({**params, **stats}, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
        return module

    def from_module(self, module: nn.Module) -> tuple[Params, Stats]:
        """``(params, stats)`` read from a module built by :meth:`as_module` (or with the same layout)."""
        state = module.state_dict()
        params = {k: state[k].detach().clone() for k in self.param_shapes() if k in state}
        stats = {k: state[k].detach().clone() for k in self.init_stats() if k in state}
        self.check_params(params, "the module's parameters")
        self.check_stats(stats, "the module's BatchNorm statistics")
        return params, stats

    def from_torchvision(self, state_dict: dict) -> tuple[Params, Stats]:
        """``(params, stats)`` from a torchvision ResNet ``state_dict`` of the same layout (e.g.
        ``torchvision.models.resnet18(weights=...).state_dict()`` into
        ``ResNet(3, 1000, 64, (2, 2, 2, 2), 224, stem="imagenet")``)."""
        keys = set(self.param_shapes()) | set(self.init_stats())
        theirs = {k for k in state_dict if not k.endswith("num_batches_tracked")}
        if theirs != keys:
            missing, extra = sorted(keys - theirs)[:3], sorted(theirs - keys)[:3]
            raise ShapeMismatchError(f"the state dict does not have the layout of {self!r} (missing {missing}, "
                                     f"unexpected {extra}): build the ResNet with the same blocks, width and stem")
        params = {k: state_dict[k].detach().clone().float() for k in self.param_shapes()}
        stats = {k: state_dict[k].detach().clone().float() for k in self.init_stats()}
        self.check_params(params, "the torchvision parameters")
        self.check_stats(stats, "the torchvision BatchNorm statistics")
        return params, stats

    def with_head(self, classes: int | None) -> "ResNet":
        """The same body with a head of ``classes`` logits (``None``: no head)."""
        return ResNet(self.in_channels, classes, self.width, self.blocks, self.image_size, self.stem)

    def spec(self) -> dict:
        return {"class": "ResNet", "in_channels": self.in_channels, "classes": self.classes, "width": self.width,
                "blocks": list(self.blocks), "image_size": self.image_size, "stem": self.stem}

    def __repr__(self) -> str:
        stem = "" if self.stem == "small" else ", stem='imagenet'"
        return (f"ResNet(in_channels={self.in_channels}, classes={self.classes}, width={self.width}, "
                f"blocks={self.blocks}, image_size={self.image_size}{stem})")


class _Norm(nn.BatchNorm2d):
    """BatchNorm whose source of statistics the functional forward chooses (``mode``):

    ``"batch"``: the batch's own, nothing updated; ``"fixed"``: the running buffers (given by functional_call);
    ``None`` (an ordinary module): PyTorch's train/eval behaviour.
    """

    mode: str | None = None

    def forward(self, x):
        if self.mode == "batch":
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if self.mode == "fixed":
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _Norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = _Norm(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _Norm(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResNetModule(nn.Module):
    def __init__(self, c_in: int, width: int, blocks: tuple[int, ...], classes: int | None, stem: str):
        super().__init__()
        self.imagenet_stem = stem == "imagenet"
        if self.imagenet_stem:
            self.conv1 = nn.Conv2d(c_in, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(c_in, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _Norm(width)
        c = width
        for i, n in enumerate(blocks):
            out = width * 2 ** i
            layer = nn.Sequential(*[_BasicBlock(c if j == 0 else out, out, 2 if (i > 0 and j == 0) else 1)
                                    for j in range(n)])
            setattr(self, f"layer{i + 1}", layer)
            c = out
        self.fc = nn.Linear(c, classes) if classes is not None else None

    def forward(self, x, embed_only: bool = False, mode: str | None = None, start: int = 0, stop: int = 5):
        """Stages ``start..stop-1`` (0 the stem, 1-4 layer1-4); with ``stop=5`` then pooling and the head."""
        norms = [m for m in self.modules() if isinstance(m, _Norm)]
        for m in norms:
            m.mode = mode
        try:
            for i in range(start, min(stop, 5)):
                if i == 0:
                    x = F.relu(self.bn1(self.conv1(x)))
                    x = F.max_pool2d(x, 3, stride=2, padding=1) if self.imagenet_stem else F.max_pool2d(x, 2)
                else:
                    x = getattr(self, f"layer{i}")(x)
        finally:
            for m in norms:
                m.mode = None
        if stop < 5:
            return x
        z = x if start == 5 else x.mean(dim=(2, 3))       # start=5: x is already the pooled embedding
        if embed_only or self.fc is None:
            return z
        return self.fc(z)
