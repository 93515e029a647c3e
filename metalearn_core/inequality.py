r"""Inequality measures of a set of task losses, for TAML's inequality-minimisation objective.

Task-Agnostic Meta-Learning (Jamal & Qi, 2019) adds :math:`\lambda\, I(\{\ell_1, \dots, \ell_M\})` to the
meta-objective, where :math:`\ell_i = L_{T_i}(f_\theta)` is the loss of the initial model on task
:math:`T_i` of the meta-batch and :math:`I` measures how unequal those losses are. An initialisation
that is much better on some tasks than on others is biased towards them; making the losses equal makes
it *task-agnostic*.

Every measure here takes a 1-D tensor of positive losses (mean :math:`\mu`, :math:`M` of them), is
differentiable with ``torch``, is 0 when all losses are equal, and does not change when all losses are
multiplied by the same positive number (it measures *relative* inequality):

==========================  ==================================================================================
measure (name)              formula
==========================  ==================================================================================
Theil (``theil``)           :math:`\frac1M\sum_i \frac{\ell_i}{\mu}\ln\frac{\ell_i}{\mu}` (= GE(1))
GE(α) (``ge``)              :math:`\frac{1}{M\,\alpha(\alpha-1)}\sum_i\big[(\ell_i/\mu)^\alpha - 1\big]`;
                            α = 0 is the mean log deviation :math:`-\frac1M\sum_i\ln(\ell_i/\mu)`, α = 1 Theil
Atkinson (``atkinson``)     :math:`1 - \frac1\mu\big(\frac1M\sum_i \ell_i^{1-\varepsilon}\big)^{1/(1-\varepsilon)}`,
                            ε ≥ 0; ε = 1 uses the geometric mean, :math:`1 - (\prod_i\ell_i)^{1/M}/\mu`
Gini (``gini``)             :math:`\frac{1}{2M^2\mu}\sum_i\sum_j|\ell_i-\ell_j|`
variance of logarithms      :math:`\frac1M\sum_i\big(\ln\ell_i - \overline{\ln\ell}\big)^2`
(``varlog``)
==========================  ==================================================================================

GE(α) weighs the top of the distribution more for large α (GE(2) is half the squared coefficient of
variation) and the bottom more for small α; Atkinson's ε is an "aversion to inequality" (larger ε: the
smallest losses matter more). The Gini coefficient and the Atkinson index lie in [0, 1).

>>> import torch
>>> from metalearn_core.inequality import inequality
>>> float(inequality(torch.tensor([1.0, 1.0, 1.0]), "theil"))
0.0
>>> round(float(inequality(torch.tensor([1.0, 3.0]), "gini")), 4)
0.25
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import torch

from .errors import ConfigError

__all__ = ["MEASURES", "theil", "generalized_entropy", "mean_log_deviation", "atkinson", "gini",
           "variance_of_logs", "inequality", "check_measure", "describe_measure"]

#: losses are clamped to at least this before a logarithm or a power, so a task solved exactly (loss 0) gives
#: a finite value and gradient instead of NaN
TINY = 1e-12


def _check_losses(losses) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor):
        losses = torch.as_tensor(losses, dtype=torch.get_default_dtype())
    if losses.dim() != 1 or losses.numel() == 0:
        raise ConfigError(f"an inequality measure needs a 1-D tensor of task losses (one per task of the "
                          f"meta-batch), got shape {tuple(losses.shape)}")
    if not losses.is_floating_point():
        losses = losses.to(torch.get_default_dtype())
    detached = losses.detach()
    if not torch.isfinite(detached).all():
        raise ConfigError(f"the task losses must be finite to measure their inequality, got {detached.tolist()}")
    if (detached < 0).any():
        raise ConfigError(f"inequality measures are defined for non-negative losses, got "
                          f"{detached.min().item():.3g} among them: use a loss such as the mean squared error or "
                          f"the cross-entropy")
    return losses


def _shares(losses: torch.Tensor) -> torch.Tensor:
    """ℓ_i / μ, each clamped away from 0."""
    losses = losses.clamp_min(TINY)
    return losses / losses.mean()


def theil(losses) -> torch.Tensor:
    r"""Theil index :math:`\frac1M\sum_i (\ell_i/\mu)\ln(\ell_i/\mu)`, between 0 and :math:`\ln M`."""
    s = _shares(_check_losses(losses))
    return (s * torch.log(s)).mean()


def mean_log_deviation(losses) -> torch.Tensor:
    r"""Mean log deviation :math:`-\frac1M\sum_i\ln(\ell_i/\mu)` (= GE(0))."""
    s = _shares(_check_losses(losses))
    return -torch.log(s).mean()


def _check_real(name: str, value, *, minimum: float | None = None, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}" + (f": {hint}" if hint else ""))
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value!r}" + (f": {hint}" if hint else ""))
    return float(value)


def generalized_entropy(losses, alpha: float = 2.0) -> torch.Tensor:
    r"""Generalised entropy index GE(α); α = 0 and α = 1 are its limits (mean log deviation, Theil).

    Any finite α is allowed; α = 2 (the default) is half the squared coefficient of variation.
    """
    alpha = _check_real("the GE parameter α (ge_alpha)", alpha, hint="e.g. ge_alpha=2 (0 and 1 are its limits, "
                        "the mean log deviation and Theil)")
    losses = _check_losses(losses)
    if alpha == 0.0:
        return mean_log_deviation(losses)
    if alpha == 1.0:
        return theil(losses)
    s = _shares(losses)
    return (s ** alpha - 1.0).mean() / (alpha * (alpha - 1.0))


def atkinson(losses, epsilon: float = 0.5) -> torch.Tensor:
    r"""Atkinson index with inequality aversion ε ≥ 0 (ε = 0 gives 0 for any losses; ε = 1, the geometric mean)."""
    epsilon = _check_real("the Atkinson parameter ε (atkinson_epsilon)", epsilon, minimum=0.0,
                          hint="ε is an aversion to inequality, e.g. atkinson_epsilon=0.5")
    s = _shares(_check_losses(losses))
    if epsilon == 1.0:
        return 1.0 - torch.exp(torch.log(s).mean())
    return 1.0 - (s ** (1.0 - epsilon)).mean() ** (1.0 / (1.0 - epsilon))


def gini(losses) -> torch.Tensor:
    r"""Gini coefficient :math:`\sum_{i,j}|\ell_i - \ell_j| / (2M^2\mu)`, between 0 and :math:`1 - 1/M`."""
    s = _shares(_check_losses(losses))
    return (s[:, None] - s[None, :]).abs().mean() / 2.0


def variance_of_logs(losses) -> torch.Tensor:
    r"""Variance of the logarithms of the losses (around their mean, the log of the geometric mean)."""
    logs = torch.log(_check_losses(losses).clamp_min(TINY))
    return ((logs - logs.mean()) ** 2).mean()


#: name → (function, its parameter's keyword or None, a one-line description)
MEASURES: dict[str, tuple[Callable, str | None, str]] = {
    "theil": (theil, None, "Theil index"),
    "ge": (generalized_entropy, "alpha", "generalised entropy GE(α)"),
    "atkinson": (atkinson, "epsilon", "Atkinson index"),
    "gini": (gini, None, "Gini coefficient"),
    "varlog": (variance_of_logs, None, "variance of logarithms"),
}

_ALIASES = {"ge_entropy": "ge", "generalized_entropy": "ge", "generalised_entropy": "ge",
            "variance_of_logs": "varlog", "var_log": "varlog", "theil_index": "theil"}


def check_measure(measure: str) -> str:
    """The canonical name of ``measure`` (case-insensitive; aliases such as ``generalized_entropy``)."""
    key = str(measure).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in MEASURES:
        raise ConfigError(f"unknown inequality measure {measure!r}: choose one of {', '.join(MEASURES)} "
                          f"({'; '.join(f'{k}: {v[2]}' for k, v in MEASURES.items())})")
    return key


def inequality(losses, measure: str = "theil", *, ge_alpha: float = 2.0, atkinson_epsilon: float = 0.5
               ) -> torch.Tensor:
    """The inequality of ``losses`` (1-D, ≥ 0) by ``measure`` (see :data:`MEASURES`); a differentiable scalar.

    ``ge_alpha`` is the α of ``"ge"`` and ``atkinson_epsilon`` the ε of ``"atkinson"``; the other measures
    have no parameter.
    """
    key = check_measure(measure)
    if key == "ge":
        return generalized_entropy(losses, ge_alpha)
    if key == "atkinson":
        return atkinson(losses, atkinson_epsilon)
    return MEASURES[key][0](losses)


def describe_measure(measure: str, *, ge_alpha: float = 2.0, atkinson_epsilon: float = 0.5) -> str:
    """A short label, e.g. ``"GE(2)"``, ``"Atkinson(ε=0.5)"``, ``"Theil"``."""
    key = check_measure(measure)
    if key == "ge":
        return f"GE({ge_alpha:g})"
    if key == "atkinson":
        return f"Atkinson(ε={atkinson_epsilon:g})"
    return {"theil": "Theil", "gini": "Gini", "varlog": "var. of logs"}[key]
