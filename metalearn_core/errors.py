"""Errors raised by metalearn_core.

Every error the package raises on bad input is a :class:`MetaLearnError` whose message is one line saying
what was wrong and how to fix it. They subclass :class:`ValueError` so that code catching ``ValueError``
keeps working.
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = [
    "MetaLearnError",
    "ConfigError",
    "ShapeMismatchError",
    "CheckpointError",
    "DivergenceError",
    "DataError",
    "check_positive",
    "check_positive_int",
    "BLOWUP_FACTOR",
]

#: A loss this many times larger after adaptation than before is treated as divergence, not as a result
#: (the inner learning rate α is too large: the inner steps overshoot instead of descending).
BLOWUP_FACTOR = 1e4


class MetaLearnError(ValueError):
    """Base class of every error metalearn_core raises on bad input or failed training."""


class ConfigError(MetaLearnError):
    """A setting is invalid (a learning rate, a number of steps or shots, a budget name...)."""


class ShapeMismatchError(MetaLearnError):
    """A model and a task family do not fit together (input or output sizes differ)."""


class CheckpointError(MetaLearnError):
    """A checkpoint is missing, corrupt, or was saved for another model or format version."""


class DivergenceError(MetaLearnError):
    """Training or adaptation produced a non-finite loss (NaN or inf)."""


class DataError(MetaLearnError):
    """A data file is missing, corrupt (wrong checksum, not a zip) or laid out unlike the official release."""


def check_positive(name: str, value, *, hint: str = "") -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise :class:`ConfigError`.

    ``hint`` is appended to the message, e.g. "the MAML paper uses α=0.01 for sinusoids".
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        try:  # accept 0-d tensors and numpy scalars
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}{_tail(hint)}") from None
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{name} must be a finite number, got {value}{_tail(hint)}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}{_tail(hint)}")
    return value


def check_positive_int(name: str, value, *, minimum: int = 1, hint: str = "") -> int:
    """Return ``int(value)`` if it is an integer >= ``minimum``, else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}{_tail(hint)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}{_tail(hint)}")
    return int(value)


def _tail(hint: str) -> str:
    return f" ({hint})" if hint else ""
