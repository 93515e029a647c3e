r"""Checkers for the exercises of chapter 5, "First-order MAML and Reptile".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
5.1    one batched Reptile update with plain SGD (ε = 0.5) from φ = (1, 0) for two tasks whose
       adapted parameters are (3, 1) and (1, −3): the new φ
5.2    multiple choice: when first-order MAML's meta-gradient equals MAML's
=====  ==========================================================================================
"""

from __future__ import annotations

import numpy as np

from . import compare_choice, compare_numbers, exercise

__all__ = ["EX_5_1", "EX_5_2_OPTIONS"]

EX_5_1 = {"phi": (1.0, 0.0), "adapted": ((3.0, 1.0), (1.0, -3.0)), "epsilon": 0.5}


@exercise("5.1", "One Reptile update by hand")
def _check_5_1(answer):
    phi, tilde, eps = np.array(EX_5_1["phi"]), np.array(EX_5_1["adapted"]), EX_5_1["epsilon"]
    expected = phi + eps * (tilde.mean(0) - phi)
    hints = {
        "that moves φ all the way to the average of the adapted parameters (ε = 1); Reptile moves a fraction ε "
        "of the way": tilde.mean(0),
        "the step goes *toward* the adapted parameters: φ + ε(φ̃ − φ), not φ − ε(φ̃ − φ)":
            phi - eps * (tilde.mean(0) - phi),
        "the batched update averages the differences over the tasks (divide by the number of tasks)":
            phi + eps * (tilde - phi).sum(0),
        "that uses only the first task; the batched update averages both": phi + eps * (tilde[0] - phi),
    }
    return compare_numbers(answer, expected, rtol=1e-6, atol=1e-9, hints=hints)


EX_5_2_OPTIONS = {
    "a": "when the inner step size α tends to zero",
    "b": "when the inner loop takes many steps with a large α",
    "c": "when the Hessian of every task's support loss is zero along the inner path",
    "d": "in both cases (a) and (c), and not in general otherwise",
}


@exercise("5.2", "When is first-order MAML exact?")
def _check_5_2(answer):
    why = {
        "a": "true, but not the only case: look at the factor FOMAML drops, ∏(I − α∇²L), and when else it is I",
        "b": "the opposite: the dropped factor ∏(I − α∇²L) is furthest from I with many steps of a large α",
        "c": "true, but not the only case: look at the factor FOMAML drops, ∏(I − α∇²L), and when else it is I",
    }
    return compare_choice(answer, EX_5_2_OPTIONS, "d", (
        "correct: the dropped factor is ∏(I − α∇²L), which is I when α = 0 or when the Hessian is zero"), why)
