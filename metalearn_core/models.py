"""Functional models: parameters are a plain ``dict[str, Tensor]``.

A model object holds only its *architecture*; the weights travel separately, so an inner loop can produce
new weights θ' without touching any module state:

>>> model = MLP((1, 40, 40, 1))
>>> params = model.init(seed=0)             # {"0.weight": ..., "0.bias": ..., ...}
>>> y = model(params, torch.zeros(5, 1))    # torch.func.functional_call under the hood

This is the interface every algorithm in :mod:`metalearn_core.algorithms` uses.
"""

from __future__ import annotations

import abc

from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call

from .errors import ConfigError, ShapeMismatchError, check_positive_int

__all__ = ["FunctionalModel", "MLP", "LinearModel", "Params"]

Params = dict[str, torch.Tensor]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class FunctionalModel(abc.ABC):
    """Base class: wraps an ``nn.Module`` used only as an architecture for ``functional_call``.

    Subclasses set ``self.module``, ``self.in_features``, ``self.out_features`` and implement
    :meth:`spec` (a JSON-able description used to check checkpoints).
    """

    module: nn.Module
    in_features: int
    out_features: int

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
        """Raise :class:`ShapeMismatchError` if this model's input/output sizes differ from the family's."""
        if family.in_features != self.in_features or family.out_features != self.out_features:
            raise ShapeMismatchError(
                f"{self!r} maps {self.in_features} input feature(s) to {self.out_features} output(s), but "
                f"{family!r} has tasks with {family.in_features} input(s) and {family.out_features} output(s): "
                f"build the model with in_features={family.in_features}, out_features={family.out_features}")

    def check_input(self, x: torch.Tensor, y: torch.Tensor | None = None, where: str = "task data") -> None:
        """Raise :class:`ShapeMismatchError` if ``x`` (and ``y``) do not have this model's feature sizes."""
        if x.shape[-1] != self.in_features:
            raise ShapeMismatchError(
                f"{where} has inputs with {x.shape[-1]} feature(s) but {self!r} expects {self.in_features}: "
                f"build the model with in_features={x.shape[-1]}")
        if y is not None and y.shape[-1] != self.out_features:
            raise ShapeMismatchError(
                f"{where} has targets with {y.shape[-1]} output(s) but {self!r} produces {self.out_features}: "
                f"build the model with out_features={y.shape[-1]}")


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
