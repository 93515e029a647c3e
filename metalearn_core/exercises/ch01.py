r"""Checkers for the exercises of chapter 1, "Learning to learn".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
1.1    how many labelled support examples and query examples a 20-way 1-shot episode with 15
       queries per class holds: a pair ``(support, query)``
1.2    the shape of ``x_query`` for 8 sinusoid tasks with K = 5 support and Q = 20 query points
1.3    multiple choice: which data may be used to choose the inner learning rate α
1.4    the value of the average sinusoid :math:`\bar f(x) = \mathbb E_T[A\sin(x-\varphi)]` at x = 0, to
       three significant figures (relative tolerance 0.3%)
=====  ==========================================================================================

The expected values are computed here from the exercise's data, never stored as bare numbers, and the
``hints`` name the typical wrong answers without giving the right one away.
"""

from __future__ import annotations

import math

import numpy as np

from . import compare_choice, compare_numbers, exercise

__all__ = ["EX_1_1", "EX_1_2", "EX_1_3_OPTIONS", "EX_1_4", "average_sinusoid", "monte_carlo_standard_error"]

# 1.1: an N-way K-shot classification episode with Q query examples per class.
EX_1_1 = {"ways": 20, "shots": 1, "queries_per_class": 15}
# 1.2: a batch of sinusoid tasks, as ml.SinusoidTasks().sample(tasks, shots=K, queries=Q) returns it.
EX_1_2 = {"tasks": 8, "shots": 5, "queries": 20, "in_features": 1}
# 1.4: the sinusoid family of Finn et al. (2017), evaluated at this x; the chapter's Monte Carlo estimate of
# the average sinusoid averages this many sampled tasks. The answer is asked to three significant figures:
# a relative tolerance of 0.3% accepts -1.62 and rejects -1.61 and -1.63.
EX_1_4 = {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi), "x": 0.0, "mc_tasks": 10_000}
EX_1_4_RTOL = 3e-3


def _mean_sin(x: float, phase=(0.0, math.pi)) -> float:
    r""":math:`\mathbb E[\sin(x-\varphi)]` for :math:`\varphi \sim U[p_0, p_1]`."""
    p0, p1 = phase
    return (math.cos(x - p1) - math.cos(x - p0)) / (p1 - p0)


def average_sinusoid(x: float, amplitude=(0.1, 5.0), phase=(0.0, math.pi)) -> float:
    r""":math:`\mathbb E[A\sin(x-\varphi)]` for independent :math:`A \sim U[a_0, a_1]`, :math:`\varphi\sim U[p_0, p_1]`.

    :math:`\mathbb E[A] = (a_0+a_1)/2` and :math:`\mathbb E[\sin(x-\varphi)] = \frac{1}{p_1-p_0}
    \int_{p_0}^{p_1}\sin(x-\varphi)\,d\varphi = \frac{\cos(x-p_1)-\cos(x-p_0)}{p_1-p_0}`; for the phase range
    :math:`[0, \pi]` this is :math:`-\frac{2}{\pi}\cos x`.
    """
    a0, a1 = amplitude
    return 0.5 * (a0 + a1) * _mean_sin(x, phase)


def monte_carlo_standard_error(x: float, n_tasks: int, amplitude=(0.1, 5.0), phase=(0.0, math.pi)) -> float:
    r"""Standard error of the mean of ``n_tasks`` sampled values :math:`A\sin(x-\varphi)` (the Monte Carlo
    estimate of :math:`\bar f(x)`): :math:`\sqrt{(\mathbb E[A^2]\,\mathbb E[\sin^2(x-\varphi)] - \bar f(x)^2)/n}`."""
    (a0, a1), (p0, p1) = amplitude, phase
    mean_a2 = (a1 ** 3 - a0 ** 3) / (3.0 * (a1 - a0))
    mean_sin2 = 0.5 - (math.sin(2 * (x - p0)) - math.sin(2 * (x - p1))) / (4.0 * (p1 - p0))
    variance = mean_a2 * mean_sin2 - average_sinusoid(x, amplitude, phase) ** 2
    return math.sqrt(max(variance, 0.0) / n_tasks)


# ---- 1.1 ---------------------------------------------------------------------------------------------------
@exercise("1.1", "Counting the examples of a 20-way 1-shot episode")
def _check_1_1(answer):
    n, k, q = EX_1_1["ways"], EX_1_1["shots"], EX_1_1["queries_per_class"]
    support, query = n * k, n * q
    pair = _pair(answer)
    if pair is None:
        return False, "give two whole numbers, (support examples, query examples), e.g. as a tuple (a, b)"
    s, t = pair
    if (s, t) == (support, query):
        return True, "correct."
    known = {
        (query, support): "the numbers are in the wrong order: give (support examples, query examples)",
        (support, q): "the query count you gave is per class: an episode has Q queries for *each* of its N classes",
        (k, q): "those are the counts per class; the exercise asks for the totals over all N classes",
        (support, support + query): "the second number counts support and query together; give the two sets "
                                    "separately",
    }
    if (s, t) in known:
        return False, known[(s, t)]
    if s == support:
        return False, "the support count is right; recount the query examples (Q per class, for every class)"
    if t == query:
        return False, "the query count is right; recount the support examples (K labelled examples per class)"
    return False, "neither count is right: an N-way K-shot episode has K labelled examples of each of its N classes"


def _pair(answer):
    try:
        values = [float(v) for v in answer]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(v.is_integer() for v in values):
        return None
    return int(values[0]), int(values[1])


# ---- 1.2 ---------------------------------------------------------------------------------------------------
@exercise("1.2", "The shape of a batch of sinusoid tasks")
def _check_1_2(answer):
    b, k, q, d = (EX_1_2[n] for n in ("tasks", "shots", "queries", "in_features"))
    expected = (b, q, d)
    try:
        shape = tuple(int(v) for v in answer)
    except (TypeError, ValueError):
        return False, ("give the shape as a tuple of whole numbers, e.g. (2, 3, 4), or a torch.Size "
                       "(batch.x_query.shape)")
    if shape == expected:
        return True, "correct."
    known = {
        (b, k, d): "that is the shape of x_support: the query set holds Q points per task, not K",
        (b, k + q, d): "that counts support and query points together (what TaskBatch.all_data() returns); "
                       "x_query holds only the query points",
        (b, q): "the last dimension is missing: every input is a vector of in_features numbers (here one), "
                "so a TaskBatch keeps a feature dimension even for 1-D inputs",
        (q, d): "the first dimension is missing: a TaskBatch stacks all B tasks along a leading task dimension",
        (q, b, d): "the task dimension comes first in a TaskBatch: [B, Q, in_features]",
        (b * q, d): "the tasks are not flattened together: each task keeps its own row, [B, Q, in_features]",
    }
    if shape in known:
        return False, known[shape]
    if len(shape) != len(expected):
        return False, (f"your shape has {len(shape)} dimension(s); a TaskBatch tensor has one for the tasks, "
                       "one for the examples of a task and one for the features")
    return False, "right number of dimensions, but not the right sizes: recheck which of B, K and Q goes where"


# ---- 1.3 ---------------------------------------------------------------------------------------------------
EX_1_3_OPTIONS = {
    "a": "the query sets of the meta-test tasks: pick the α whose reported test MSE is lowest",
    "b": "the support sets of the meta-training tasks: pick the α that fits the support points best",
    "c": "a separate set of meta-validation tasks from p(T), disjoint from the meta-test tasks: adapt on their "
         "support sets and compare the losses on their query sets",
    "d": "the meta-test tasks, as long as only the mean over hundreds of tasks is looked at, never a single task",
}

_EX_1_3_WHY_NOT = {
    "a": "choosing α by the meta-test query loss tunes the method on the test tasks, so the reported number "
         "is optimistically biased: it no longer measures how the method does on tasks it has never seen",
    "b": "the loss on the support points measures how well the model fits the points it just adapted on; "
         "it rewards the largest α that does not diverge (the one that fits those K points most closely) and "
         "says nothing about the rest of the task's function, which is what the query points measure",
    "d": "averaging over many test tasks makes the estimate less noisy, but it is still selected on the test "
         "tasks: the choice leaks into the reported result however many tasks it is averaged over",
}


@exercise("1.3", "Which tasks may be used to choose α?")
def _check_1_3(answer):
    return compare_choice(answer, EX_1_3_OPTIONS, "c", (
        "correct: meta-validation tasks play the role a validation set plays in ordinary learning; the meta-test "
        "tasks are looked at once, at the end"), _EX_1_3_WHY_NOT)


# ---- 1.4 ---------------------------------------------------------------------------------------------------
@exercise("1.4", "The average sinusoid at x = 0")
def _check_1_4(answer):
    (a0, a1), (p0, p1), x = EX_1_4["amplitude"], EX_1_4["phase"], EX_1_4["x"]
    expected = average_sinusoid(x, (a0, a1), (p0, p1))
    mean_amp, mid_phase = 0.5 * (a0 + a1), 0.5 * (p0 + p1)
    hints = {
        "right size, wrong sign: an antiderivative of sin(x − φ) with respect to φ is +cos(x − φ), "
        "so the integral over [0, π] is cos(x − π) − cos(x)": -expected,
        "that is A sin(x − φ) at the *average* amplitude and the *average* phase: the average of sin(x − φ) "
        "over φ is not sin(x − average φ), integrate over φ ∈ [0, π]": mean_amp * math.sin(x - mid_phase),
        "that is E[sin(x − φ)] alone: multiply by E[A] (A and φ are independent)":
            _mean_sin(x, (p0, p1)),
        "E[A] is the midpoint of [0.1, 5], not of [0, 5]": average_sinusoid(x, (0.0, 5.0), (p0, p1)),
        "you used the largest amplitude; the average needs E[A], the midpoint of [0.1, 5]":
            a1 * _mean_sin(x, (p0, p1)),
        "zero would be right if φ ranged over a whole period [0, 2π]; here it ranges over [0, π] only, and "
        "the half-period average does not cancel": 0.0,
    }
    ok, message = compare_numbers(answer, expected, rtol=EX_1_4_RTOL, atol=1e-4, hints=hints)
    if ok or message in hints:
        return ok, message
    # Within a few standard errors of the exact value: most likely the Monte Carlo estimate f_bar[100], or the
    # exact value rounded too coarsely.
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return ok, message
    if abs(value - expected) <= 4 * monte_carlo_standard_error(x, EX_1_4["mc_tasks"], (a0, a1), (p0, p1)):
        return False, ("close, but not the exact value to three significant figures. If this is the Monte "
                       "Carlo estimate f_bar[100]: it carries sampling error, and the exercise asks for the exact "
                       "value, from the closed form of the integral; otherwise, recheck the rounding")
    return ok, message
