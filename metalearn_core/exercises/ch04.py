r"""Checkers for the exercises of chapter 4, "MAML on sinusoid regression".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
4.1    how many training tasks the paper's 70,000-iteration run meta-trains on
4.2    the 95% confidence half-width of a mean over 600 test tasks with sample standard deviation 0.9
4.3    which published 5-shot MAML values (after 1, 5, 10 steps) fall inside the 95% CI of our shipped
       ``cpu`` run: a list of step counts, checked against ``results/sinusoid.json``
=====  ==========================================================================================
"""

from __future__ import annotations

import math

from . import compare_numbers, exercise

__all__ = ["EX_4_1", "EX_4_2", "published_inside_ci"]

EX_4_1 = {"iterations": 70_000, "meta_batch": 25, "points_per_task": 20}
EX_4_2 = {"n_tasks": 600, "std": 0.9}


@exercise("4.1", "How many tasks does MAML see in training?")
def _check_4_1(answer):
    it, b, pts = EX_4_1["iterations"], EX_4_1["meta_batch"], EX_4_1["points_per_task"]
    hints = {
        "that is the number of meta-iterations (outer updates); each one samples a whole meta-batch of tasks": it,
        "that counts data points (each task has K = 10 support and 10 query points); the question asks for "
        "tasks": it * b * pts,
        "that counts support points only; the question asks for tasks": it * b * 10,
    }
    return compare_numbers(answer, it * b, rtol=1e-9, atol=0.5, hints=hints)


@exercise("4.2", "A confidence interval by hand")
def _check_4_2(answer):
    from ..evaluation import t_critical

    n, s = EX_4_2["n_tasks"], EX_4_2["std"]
    expected = t_critical(n - 1) * s / math.sqrt(n)
    hints = {
        "that divides by n, not by √n: the standard error of a mean is s/√n": t_critical(n - 1) * s / n,
        "that is the standard error s/√n alone; the 95% half-width multiplies it by the t (≈ normal) "
        "quantile 1.96": s / math.sqrt(n),
        "1.645 is the one-sided 95% quantile; a two-sided 95% interval uses 1.96": 1.645 * s / math.sqrt(n),
        "that is the full width of the interval (both sides); give the half-width, the ± number":
            2 * t_critical(n - 1) * s / math.sqrt(n),
    }
    return compare_numbers(answer, expected, rtol=5e-3, atol=1e-4, hints=hints)


def published_inside_ci(root=None) -> list[int]:
    """Step counts whose published 5-shot MAML MSE lies inside our shipped run's 95% CI."""
    from ..experiments import sinusoid
    from ..results import select

    rows = select(sinusoid.shipped_rows("cpu", 0, root), algorithm="MAML", setting="5-shot")
    inside = []
    for r in rows:
        pub = r.get("published")
        if pub is not None and abs(r["mean"] - pub) <= r["ci95"]:
            inside.append(r["steps"])
    return sorted(inside)


@exercise("4.3", "Is the published number inside our interval?")
def _check_4_3(answer):
    try:
        given = sorted(int(v) for v in answer)
    except (TypeError, ValueError):
        return False, "give a list of step counts, e.g. [1, 5] (or [] if none)"
    if any(s not in (1, 5, 10) for s in given):
        return False, "the published table has values after 1, 5 and 10 steps only"
    expected = published_inside_ci()
    if given == expected:
        return True, "correct."
    missing, extra = set(expected) - set(given), set(given) - set(expected)
    if extra:
        return False, (f"after {sorted(extra)} step(s) the published value is *outside* our interval: compare "
                       "|our mean − published| with our ± half-width")
    return False, (f"you left out {len(missing)} step count(s) whose published value lies inside: an interval "
                   "mean ± h contains every value within h of the mean")
