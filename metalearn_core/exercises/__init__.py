"""Answer checkers for the chapters' exercises.

Each exercise has an id such as ``"2.1"`` (chapter 2, exercise 1) and a checker registered with
:func:`exercise`. A student calls :func:`check` with their answer and gets :class:`Feedback`: whether it is
right and, if not, *what kind* of wrong (shape, sign, order of magnitude, a missing term) without being
shown the expected value.

>>> from metalearn_core.exercises import check
>>> check("2.1", 1.28)          # doctest: +SKIP
✓ Exercise 2.1: correct.
"""

from __future__ import annotations

import html
import importlib
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError

__all__ = ["Feedback", "check", "exercise", "compare_numbers", "compare_choice", "list_exercises"]

_REGISTRY: dict[str, tuple[str, Callable]] = {}
_CHAPTER_MODULES = ("ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08")


@dataclass
class Feedback:
    """The verdict on one answer; truthy when correct. Shows as coloured text in notebooks."""

    exercise: str
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{'✓' if self.ok else '✗'} Exercise {self.exercise}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.ok else "#b00020"
        return (f'<div style="color:{colour};font-weight:bold">{html.escape(str(self))}</div>')


def exercise(exercise_id: str, title: str):
    """Register ``fn(answer) -> (ok, message)`` as the checker of ``exercise_id``."""
    def deco(fn):
        _REGISTRY[exercise_id] = (title, fn)
        return fn
    return deco


def _load_all() -> None:
    for name in _CHAPTER_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def _load_chapter(exercise_id: str) -> None:
    """Import only the checkers of the exercise's chapter ("2.1" -> ch02), so one chapter's module
    cannot break another's exercises."""
    head = str(exercise_id).split(".")[0]
    if head.isdigit() and f"ch{int(head):02d}" in _CHAPTER_MODULES:
        importlib.import_module(f"{__name__}.ch{int(head):02d}")


def list_exercises() -> dict[str, str]:
    """``{id: title}`` of every exercise with a checker."""
    _load_all()
    return {k: v[0] for k, v in sorted(_REGISTRY.items())}


def check(exercise_id: str, answer) -> Feedback:
    """Check ``answer`` to exercise ``exercise_id`` (e.g. ``"2.1"``)."""
    _load_chapter(exercise_id)
    if exercise_id not in _REGISTRY:
        _load_all()
    if exercise_id not in _REGISTRY:
        raise ConfigError(f"no exercise {exercise_id!r}: known exercises are {', '.join(sorted(_REGISTRY))}")
    _, fn = _REGISTRY[exercise_id]
    if answer is None or answer is Ellipsis:
        return Feedback(exercise_id, False, "no answer yet (replace the ... with your answer)")
    ok, message = fn(answer)
    return Feedback(exercise_id, bool(ok), message)


def _as_array(answer) -> np.ndarray | None:
    try:
        if hasattr(answer, "detach"):
            answer = answer.detach().cpu().numpy()
        return np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None


def compare_numbers(answer, expected, *, rtol: float = 1e-3, atol: float = 1e-6,
                    hints: dict[str, object] | None = None) -> tuple[bool, str]:
    """Compare a number or array with the expected one and explain a mismatch without revealing it.

    ``hints`` maps a message to a *known wrong* answer (e.g. the value you get when the Hessian term is
    forgotten); if the student's answer matches one, that message is given.
    """
    a, e = _as_array(answer), np.asarray(expected, dtype=float)
    if a is None:
        return False, f"expected a number or an array of numbers, got {type(answer).__name__}"
    if a.shape != e.shape and a.size == e.size:
        a = a.reshape(e.shape)
    if a.shape != e.shape:
        return False, f"wrong shape: your answer has shape {a.shape}, the answer has shape {e.shape}"
    if not np.all(np.isfinite(a)):
        return False, "your answer contains NaN or inf"
    if np.allclose(a, e, rtol=rtol, atol=atol):
        return True, "correct."
    for message, wrong in (hints or {}).items():
        if np.allclose(a, np.asarray(wrong, dtype=float).reshape(a.shape), rtol=rtol, atol=atol):
            return False, message
    if np.allclose(a, -e, rtol=rtol, atol=atol):
        return False, "right size, wrong sign: check the direction of the step (or of the gradient)"
    na, ne = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    if ne > 0 and na > 0:
        ratio = na / ne
        if ratio > 3 or ratio < 1 / 3:
            return False, (f"off by about a factor of {ratio:.2g} in size "
                           f"({'too large' if ratio > 1 else 'too small'}): check constants such as α or 1/n")
    return False, "not quite: the value is in the right range but not correct; recheck each term"


_LETTER = re.compile(r"^(?:(?:option|answer)\s*:?)?\s*[(\[]?\s*([a-z])\s*[)\]]?\s*[.:]?$")


def _letter(answer: str) -> str | None:
    """The one letter of an answer such as ``"c"``, ``"C"``, ``"(c)"``, ``"c)"`` or ``"option c"``, else None."""
    m = _LETTER.match(answer.strip().lower())
    return m.group(1) if m else None


def compare_choice(answer, options: dict[str, str], correct: str, right: str,
                   why: dict[str, str]) -> tuple[bool, str]:
    """Check a multiple-choice answer: one letter of ``options`` (``"c"``, ``"(C)"``, ``"option c"``...).

    ``right`` is the message for the ``correct`` letter; ``why[letter]`` explains each wrong option without
    giving the answer away.
    """
    keys = sorted(options)
    letters = ", ".join(keys[:-1]) + " or " + keys[-1]
    if not isinstance(answer, str):
        return False, f"answer with one letter, {letters}, as a string (e.g. \"a\"), not {type(answer).__name__}"
    letter = _letter(answer)
    if letter is None:
        return False, (f"answer with a single letter, {letters}, as a string: \"c\", \"(c)\" and "
                       f"\"option c\" are all understood")
    if letter not in options:
        return False, f"there is no option ({letter}): answer with one of the letters {letters}"
    if letter == correct:
        return True, right
    return False, f"not ({letter}): {why[letter]}"
