r"""Checkers for the exercises of chapter 2, "The maths of the inner and outer update".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
2.1    MAML's meta-gradient of a 1-D quadratic after one inner step (the Hessian term included)
2.2    the same after k = 3 inner steps
2.3    the largest inner learning rate α for which gradient descent on a quadratic does not diverge
2.4    code: MAML's meta-gradient on a toy batch written with ``torch.func`` (see :func:`setup_2_4`)
=====  ==========================================================================================

The expected values are computed here from the exercise's data, never stored as bare numbers, and the
``hints`` name the typical wrong answers (the first-order value, a missing Jacobian factor, ...).
"""

from __future__ import annotations

import torch

from ..tasks import QuadraticTasks, TaskBatch
from . import compare_numbers, exercise

__all__ = ["EX_2_1", "EX_2_2", "EX_2_3", "setup_2_4"]

# 2.1 and 2.2: support and query loss L(θ) = ½ h (θ − w)², one task, plain gradient descent in the inner loop.
EX_2_1 = {"h": 2.0, "w": 1.0, "alpha": 0.1, "theta": 2.0}
EX_2_2 = {**EX_2_1, "steps": 3}
# 2.3: a quadratic task whose Hessian has these eigenvalues.
EX_2_3 = {"eigenvalues": (4.0, 0.5)}


def _quadratic_1d(h, w, alpha, theta, steps):
    """(MAML meta-gradient, first-order meta-gradient, θ', query loss at θ') of L = ½h(θ−w)² after k steps."""
    shrink = (1.0 - alpha * h) ** steps                 # θ' − w = (1 − αh)^k (θ − w)
    adapted = w + shrink * (theta - w)
    first_order = h * (adapted - w)                      # ∇L(θ')
    return shrink * first_order, first_order, adapted, 0.5 * h * (adapted - w) ** 2


@exercise("2.1", "MAML's meta-gradient of a 1-D quadratic, one inner step")
def _check_2_1(answer):
    h, w, alpha, theta = (EX_2_1[k] for k in ("h", "w", "alpha", "theta"))
    maml, fomaml, adapted, loss = _quadratic_1d(h, w, alpha, theta, 1)
    return compare_numbers(answer, maml, hints={
        "that is the first-order (FOMAML) value ∇L(θ'): the chain rule adds the factor ∂θ'/∂θ = 1 − αh": fomaml,
        "that is the gradient at θ before adaptation: differentiate the loss *after* the inner step": h * (theta - w),
        "that is the adapted parameter θ' itself; the exercise asks for d L(θ') / dθ": adapted,
        "that is the query loss L(θ') after adaptation, not its derivative with respect to θ": loss,
    })


@exercise("2.2", "MAML's meta-gradient of a 1-D quadratic, three inner steps")
def _check_2_2(answer):
    h, w, alpha, theta, k = (EX_2_2[n] for n in ("h", "w", "alpha", "theta", "steps"))
    maml, fomaml, adapted, loss = _quadratic_1d(h, w, alpha, theta, k)
    one_step = _quadratic_1d(h, w, alpha, theta, 1)[0]
    shrink = 1.0 - alpha * h
    return compare_numbers(answer, maml, hints={
        "that is the first-order (FOMAML) value ∇L(θ_k): each of the k steps also contributes a Jacobian "
        "factor (1 − αh)": fomaml,
        "that is the one-step answer of exercise 2.1: here the inner loop takes three steps": one_step,
        "one factor (1 − αh) too few: θ_k − w already carries (1 − αh)^k, and the Jacobian ∂θ_k/∂θ "
        "another (1 − αh)^k": shrink ** (k + 1) * h * (theta - w),
        "you linearised (1 − αh)^k ≈ 1 − kαh; on a quadratic the product is exact, so keep the power":
            (1.0 - k * alpha * h) ** 2 * h * (theta - w),
        "that is the adapted parameter θ_k itself; the exercise asks for d L(θ_k) / dθ": adapted,
    })


@exercise("2.3", "The largest stable inner learning rate")
def _check_2_3(answer):
    lam = sorted(EX_2_3["eigenvalues"])
    lo, hi = lam[0], lam[-1]
    return compare_numbers(answer, 2.0 / hi, hints={
        "that is 2/λ for the smallest eigenvalue: the sharpest direction (largest λ) diverges first": 2.0 / lo,
        "that is 1/λ_max, the step that solves the sharpest direction in one step; a larger α still "
        "converges (with oscillations) as long as |1 − αλ| < 1": 1.0 / hi,
        "that is 1/λ_min: the limit comes from the largest eigenvalue, and it is 2/λ, not 1/λ": 1.0 / lo,
        "you used the sum of the eigenvalues; each eigen-direction is a separate 1-D problem": 2.0 / sum(lam),
    })


def setup_2_4() -> tuple[TaskBatch, torch.Tensor, float, int]:
    """The data of exercise 2.4: ``(batch, theta, alpha, steps)``.

    ``batch`` holds 5 tasks of the 2-D quadratic toy (:class:`~metalearn_core.tasks.QuadraticTasks` with its
    default settings) in float64; ``theta`` ``[2]`` is the point at which to evaluate MAML's meta-gradient,
    with inner learning rate ``alpha`` and ``steps`` inner steps on each task's support set.
    """
    batch = QuadraticTasks().sample(5, seed=2024, dtype=torch.float64)
    theta = torch.tensor([0.5, 2.0], dtype=torch.float64)
    return batch, theta, 0.15, 2


@exercise("2.4", "MAML's meta-gradient with torch.func")
def _check_2_4(answer):
    batch, theta, alpha, steps = setup_2_4()
    expected = QuadraticTasks.meta_gradient(theta, batch, alpha, steps)
    first_order = QuadraticTasks.meta_gradient(theta, batch, alpha, steps, first_order=True)
    one_step = QuadraticTasks.meta_gradient(theta, batch, alpha, 1)
    no_adapt = QuadraticTasks.hessian(batch.x_query) @ (theta - batch.info["w"])[:, :, None]
    return compare_numbers(answer, expected.numpy(), rtol=1e-4, hints={
        "that is the first-order (FOMAML) meta-gradient: the inner gradients were detached (or not "
        "differentiated through); let torch.func.grad differentiate through the whole inner loop":
            first_order.numpy(),
        "that is the meta-gradient after one inner step: the exercise asks for `steps` (two) steps":
            one_step.numpy(),
        "that is the query-loss gradient at θ without any inner step: adapt each task first": no_adapt.mean(0)[:, 0].numpy(),
        "that is the sum over the tasks: the meta-objective is the mean over the batch": (batch.n_tasks * expected).numpy(),
    })
