r"""Checkers for the exercises of chapter 6, "Task-agnostic meta-learning and learned update rules".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
6.1    the Theil index of a meta-batch whose three task losses are 1, 1 and 4
6.2    TAML's entropy term −H(f_θ) + H(f_θ') for a 5-way episode: uniform predictions before
       adaptation, probability 0.9 on one class (0.025 on each other) after (natural logarithms)
6.3    one Meta-SGD inner step by hand: θ = (1, −2), learned rates α = (0.1, 0.5), gradient (2, 1)
=====  ==========================================================================================
"""

from __future__ import annotations

import math

import numpy as np

from . import compare_numbers, exercise

__all__ = ["EX_6_1", "EX_6_2", "EX_6_3"]

EX_6_1 = {"losses": (1.0, 1.0, 4.0)}
EX_6_2 = {"ways": 5, "after": (0.9, 0.025, 0.025, 0.025, 0.025)}
EX_6_3 = {"theta": (1.0, -2.0), "rates": (0.1, 0.5), "gradient": (2.0, 1.0)}


def _entropy(p, log=np.log):
    p = np.asarray(p, dtype=float)
    return float(-(p * log(p)).sum())


@exercise("6.1", "The Theil index by hand")
def _check_6_1(answer):
    losses = np.array(EX_6_1["losses"])
    s = losses / losses.mean()
    expected = float((s * np.log(s)).mean())
    hints = {
        "that is the sum over the tasks: Theil's index is their mean (divide by M = 3)": float((s * np.log(s)).sum()),
        "use the natural logarithm (ln), not log₁₀": float((s * np.log10(s)).mean()),
        "divide each loss by the mean loss first: the index uses the shares ℓᵢ/μ": float((losses * np.log(losses)).mean()),
        "that is the Gini coefficient; Theil's index is (1/M)·Σ (ℓᵢ/μ)·ln(ℓᵢ/μ)":
            float(np.abs(losses[:, None] - losses[None, :]).sum() / (2 * len(losses) ** 2 * losses.mean())),
        "that is the mean log deviation, −(1/M)·Σ ln(ℓᵢ/μ), i.e. GE(0); Theil's index weights each log by ℓᵢ/μ":
            float(-np.log(s).mean()),
    }
    return compare_numbers(answer, expected, rtol=1e-3, atol=1e-6, hints=hints)


@exercise("6.2", "TAML's entropy term for one episode")
def _check_6_2(answer):
    before = _entropy(np.full(EX_6_2["ways"], 1.0 / EX_6_2["ways"]))
    after = _entropy(EX_6_2["after"])
    expected = -before + after
    hints = {
        "the sign: TAML minimises −H(f_θ) + H(f_θ'), i.e. the entropy after minus the entropy before":
            before - after,
        "use natural logarithms (nats), not log₂ (bits)": -_entropy(np.full(5, 0.2), np.log2) + _entropy(
            EX_6_2["after"], np.log2),
        "the entropy after adaptation has five terms: the four classes of probability 0.025 count too":
            -before - 0.9 * math.log(0.9),
        "that is only H(f_θ'), the entropy after adaptation; subtract the entropy before, ln 5": after,
        "that is only −H(f_θ); add the entropy after adaptation": -before,
    }
    return compare_numbers(answer, expected, rtol=1e-3, atol=1e-6, hints=hints)


@exercise("6.3", "One Meta-SGD step by hand")
def _check_6_3(answer):
    theta, rates, g = (np.array(EX_6_3[k]) for k in ("theta", "rates", "gradient"))
    expected = theta - rates * g
    hints = {
        "a gradient step goes *against* the gradient: θ − α∘∇L": theta + rates * g,
        "Meta-SGD multiplies element by element (α∘∇L), not with a dot product": theta - float(rates @ g),
        "each parameter has its own rate: the first uses 0.1, the second 0.5": theta - rates[::-1] * g,
        "that uses one rate (0.1) for both parameters; Meta-SGD's rates differ per parameter": theta - 0.1 * g,
    }
    return compare_numbers(answer, expected, rtol=1e-6, atol=1e-9, hints=hints)
