"""Experiments that the book reproduces from the command line (``python -m metalearn_core``).

Each experiment module offers ``reproduce(budget, seed, out)`` (train what the chapters need, write
checkpoints and ``results/<name>.json``) and ``evaluate(...)`` (re-evaluate the shipped checkpoints on
fresh test tasks). :data:`EXPERIMENTS` maps the names the command line accepts to those modules.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import ConfigError
from . import omniglot, oneshot, sinusoid, taml, transfer

__all__ = ["EXPERIMENTS", "get_experiment", "sinusoid", "omniglot", "oneshot", "taml", "transfer"]

EXPERIMENTS: dict[str, ModuleType] = {"sinusoid": sinusoid, "omniglot": omniglot, "oneshot": oneshot, "taml": taml,
                                    "transfer": transfer}


def get_experiment(name: str) -> ModuleType:
    """The experiment module called ``name``; a clear error listing the known ones otherwise."""
    key = str(name).strip().lower()
    if key not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}: known experiments are {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[key]
