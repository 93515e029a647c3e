"""Lake et al.'s 20 official 20-way one-shot runs, scored with the Omniglot experiment's 20-way networks.

``python -m metalearn_core reproduce oneshot`` scores the 20-way networks of
:mod:`~metalearn_core.experiments.omniglot` (training any whose checkpoint is missing) and writes
``results/oneshot.json``; ``evaluate oneshot`` scores the shipped checkpoints again. The runs are a fixed
test set: each final network is scored on them once, never used to choose anything.
"""

from __future__ import annotations

from .omniglot import evaluate_oneshot as evaluate
from .omniglot import oneshot_path as results_path
from .omniglot import reproduce_oneshot as reproduce

__all__ = ["reproduce", "evaluate", "results_path"]
