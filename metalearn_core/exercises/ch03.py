r"""Checkers for the exercises of chapter 3, "The maths of transfer".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
3.1    the lowest mean squared error any pooled (pre-trained, not adapted) predictor can reach on a
       sinusoid family with A ~ U[1, 3]: :math:`\mathbb E_x \operatorname{Var}_T f_T(x)`, three significant figures
3.2    the residual at a support point after one gradient step of a linearised model (tangent kernel
       value κ, step α, squared loss on that single point)
3.3    a pair: the number of parameters a linear probe of the MLP 1-40-40-1 trains, and the dimension of
       the set of those parameters that fit K = 10 support points exactly
=====  ==========================================================================================
"""

from __future__ import annotations

import math

from . import compare_numbers, exercise

__all__ = ["EX_3_1", "EX_3_2", "EX_3_3", "pooled_mse_floor", "residual_after_one_step"]

EX_3_1 = {"amplitude": (1.0, 3.0), "phase": (0.0, math.pi), "x_range": (-5.0, 5.0)}
EX_3_1_RTOL = 3e-3
EX_3_2 = {"kappa": 30.0, "alpha": 0.01, "residual": 2.0}
EX_3_3 = {"sizes": (1, 40, 40, 1), "shots": 10}


def _mean_cos2(x0: float, x1: float) -> float:
    """E[cos² x] for x ~ U[x0, x1]."""
    return 0.5 + (math.sin(2 * x1) - math.sin(2 * x0)) / (4.0 * (x1 - x0))


def pooled_mse_floor(amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0)) -> float:
    r""":math:`\mathbb E_x\operatorname{Var}_T[A\sin(x-\varphi)]` for the phase range :math:`[0, \pi]`.

    :math:`\mathbb E[f_T(x)^2] = \mathbb E[A^2]\,\mathbb E[\sin^2(x-\varphi)] = \mathbb E[A^2]/2` (half a period
    of :math:`\sin^2` averages to 1/2 exactly) and :math:`\bar f(x) = -\frac{2\mathbb E[A]}{\pi}\cos x`.
    """
    if tuple(phase) != (0.0, math.pi):
        raise ValueError("pooled_mse_floor is written for the phase range [0, π]")
    a0, a1 = amplitude
    mean_a2 = (a1 ** 3 - a0 ** 3) / (3.0 * (a1 - a0))
    c = 2.0 * 0.5 * (a0 + a1) / math.pi
    return 0.5 * mean_a2 - c ** 2 * _mean_cos2(*x_range)


def residual_after_one_step(kappa: float, alpha: float, residual: float) -> float:
    r"""One step on :math:`(f(x_1) - y_1)^2` moves :math:`f(x_1)` by :math:`-2\alpha\kappa r`: :math:`r(1-2\alpha\kappa)`."""
    return residual * (1.0 - 2.0 * alpha * kappa)


@exercise("3.1", "The error floor of a pooled predictor")
def _check_3_1(answer):
    (a0, a1), phase, (x0, x1) = EX_3_1["amplitude"], EX_3_1["phase"], EX_3_1["x_range"]
    expected = pooled_mse_floor((a0, a1), phase, (x0, x1))
    mean_a2 = (a1 ** 3 - a0 ** 3) / (3.0 * (a1 - a0))
    c2 = (2.0 * 0.5 * (a0 + a1) / math.pi) ** 2
    hints = {
        "that is E[f_T(x)²], the mean square of the targets: the floor is the *variance* around the average "
        "function, so subtract E_x[f̄(x)²]": 0.5 * mean_a2,
        "close, but E_x[cos² x] is not exactly 1/2 here: x ranges over [−5, 5], which is not a whole number "
        "of half-periods of cos²": 0.5 * mean_a2 - 0.5 * c2,
        "E[sin²(x − φ)] averages to 1/2 over φ ∈ [0, π]: the factor 1/2 is missing": mean_a2 - c2 * _mean_cos2(x0, x1),
        "E[A²] is not E[A]²: for A ~ U[a, b], E[A²] = (b³ − a³) / (3(b − a))":
            0.5 * (0.5 * (a0 + a1)) ** 2 - c2 * _mean_cos2(x0, x1),
        "that is the floor of the paper's family, A ~ U[0.1, 5]; this exercise asks for A ~ U[1, 3]":
            pooled_mse_floor((0.1, 5.0), phase, (x0, x1)),
    }
    return compare_numbers(answer, expected, rtol=EX_3_1_RTOL, atol=1e-4, hints=hints)


@exercise("3.2", "One gradient step, seen in function space")
def _check_3_2(answer):
    k, a, r = EX_3_2["kappa"], EX_3_2["alpha"], EX_3_2["residual"]
    expected = residual_after_one_step(k, a, r)
    hints = {
        "the loss is the *square* (f − y)², whose derivative is 2(f − y): a factor 2 is missing":
            r * (1.0 - a * k),
        "the step goes *against* the gradient, so it shrinks the residual: check the sign of the update":
            r * (1.0 + 2.0 * a * k),
        "that is the change of f(x₁), −2ακr; the question asks for the new residual f'(x₁) − y₁ = r + change":
            -2.0 * a * k * r,
        "that is the size of the change, 2ακr; the new residual is the old one plus the (negative) change":
            2.0 * a * k * r,
    }
    return compare_numbers(answer, expected, rtol=1e-6, atol=1e-9, hints=hints)


@exercise("3.3", "How many ways can a linear probe fit ten points?")
def _check_3_3(answer):
    sizes, shots = EX_3_3["sizes"], EX_3_3["shots"]
    n_probe = sizes[-2] * sizes[-1] + sizes[-1]
    expected = (n_probe, n_probe - shots)
    try:
        values = tuple(int(v) for v in answer)
        if len(values) != 2 or any(float(v) != int(v) for v in answer):
            raise ValueError
    except (TypeError, ValueError):
        return False, "give two whole numbers as a tuple: (parameters of the probe, dimension of the solutions)"
    if values == expected:
        return True, "correct."
    total = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    known = {
        (sizes[-2], sizes[-2] - shots): "the last layer has a bias as well as 40 weights",
        (n_probe, shots): "the second number is the dimension of the *set of solutions*: each support point "
                          "is one linear equation, and each independent equation removes one dimension",
        (n_probe, 0): "with fewer equations (10) than unknowns (41) the solution is not unique: how many "
                      "dimensions are left free?",
        (total, total - shots): "a linear probe trains only the last layer; the features stay frozen",
    }
    if values in known:
        return False, known[values]
    if values[0] == n_probe:
        return False, "the number of probe parameters is right; recount the dimension of the set of exact fits"
    return False, "recount the probe's parameters: the last layer maps 40 features to 1 output, plus a bias"
