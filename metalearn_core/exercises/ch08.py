r"""Checkers for the exercises of chapter 8, "Transfer with ResNets".

=====  ==========================================================================================
id     what is asked
=====  ==========================================================================================
8.1    the number of parameters of one basic block with 16 input and 16 output channels (no shortcut
       convolution): two 3×3 convolutions without bias, two BatchNorm layers
8.2    the number of parameters a linear probe trains: a 5-way head on the 128-dimensional embedding
       of a width-16 ResNet
8.3    a BatchNorm channel with source statistics μ = 0.2, σ² = 0.04 (γ = 1, β = 0) receives the
       target-domain value x = 0.5: what does it output with the source statistics kept (frozen)?
=====  ==========================================================================================
"""

from __future__ import annotations

import math

from . import compare_numbers, exercise

__all__ = ["EX_8_1", "EX_8_2", "EX_8_3"]

EX_8_1 = {"channels": 16, "kernel": 3}
EX_8_2 = {"ways": 5, "embedding": 128, "width": 16}
EX_8_3 = {"mean": 0.2, "var": 0.04, "x": 0.5, "eps": 1e-5}


@exercise("8.1", "Parameters of a basic block")
def _check_8_1(answer):
    c, k = EX_8_1["channels"], EX_8_1["kernel"]
    conv = c * c * k * k
    expected = 2 * conv + 2 * 2 * c
    hints = {
        "the convolutions of a ResNet block have no bias (BatchNorm's β plays its role)": expected + 2 * c,
        "running mean and variance are BatchNorm *statistics*, estimated from data, not trained parameters":
            expected + 2 * 2 * c,
        "a basic block has two 3×3 convolutions, each followed by a BatchNorm": conv + 2 * c,
        "count BatchNorm's γ and β too: 2 per channel, for each of the two BatchNorm layers": 2 * conv,
        "a 3×3 convolution from 16 to 16 channels has 16·16·3·3 weights (every output channel sees every input "
        "channel)": 2 * c * k * k + 4 * c,
    }
    return compare_numbers(answer, float(expected), rtol=0, atol=0.5, hints=hints)


@exercise("8.2", "What a linear probe trains")
def _check_8_2(answer):
    n, d = EX_8_2["ways"], EX_8_2["embedding"]
    expected = n * d + n
    hints = {
        "the head has a bias per class too": n * d,
        "the embedding of a width-16 ResNet has 8·16 = 128 features (the last stage's channels, pooled)":
            n * EX_8_2["width"] + n,
        "only the new head trains in a linear probe: the frozen network contributes nothing": None,
    }
    hints = {k: v for k, v in hints.items() if v is not None}
    return compare_numbers(answer, float(expected), rtol=0, atol=0.5, hints=hints)


@exercise("8.3", "Frozen BatchNorm statistics on a new domain")
def _check_8_3(answer):
    m, v, x, eps = EX_8_3["mean"], EX_8_3["var"], EX_8_3["x"], EX_8_3["eps"]
    expected = (x - m) / math.sqrt(v + eps)
    hints = {
        "divide by the standard deviation √σ² = 0.2, not by the variance": (x - m) / v,
        "that is what re-estimated statistics would give if the target's mean were 0.5; the frozen layer keeps "
        "the source mean μ = 0.2": 0.0,
        "subtract the mean before dividing: (x − μ)/σ": x / math.sqrt(v) - m,
    }
    return compare_numbers(answer, expected, rtol=2e-3, atol=1e-6, hints=hints)
