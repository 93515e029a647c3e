"""What the experiments share about their runs: finding runs by name, checkpoint file names, trained networks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..algorithms import MetaLearner
from ..budgets import resolve_budget
from ..errors import ConfigError
from ..models import Params
from ..results import results_dir
from ..training import History

__all__ = ["select_runs", "checkpoint_file", "SpecModel"]


def select_runs(runs: Sequence, names: Iterable[str] | str | None, keys: Callable[[object], Iterable[str]], *,
                what: str, listing: str, own: Callable[[object], Iterable[str]] | None = None) -> list:
    """The runs that ``names`` pick (all of ``runs`` for ``None``), in order and without repeats.

    A name picks every run for which it (stripped, lower case) is one of ``keys(run)``, except that a name which
    is a run's own name (one of ``own(run)``, when given) picks that run alone (``"ProtoNet"`` is one run's name
    and also a method with two runs); a name that picks none raises
    :class:`~metalearn_core.errors.ConfigError` ``"unknown <what> '<name>': the runs are <listing>"``.
    """
    if names is None:
        return list(runs)
    out = []
    for name in ([names] if isinstance(names, str) else names):
        key = str(name).strip().lower()
        found = [r for r in runs if own is not None and key in own(r)] or [r for r in runs if key in keys(r)]
        if not found:
            raise ConfigError(f"unknown {what} {name!r}: the runs are {listing}")
        out += [r for r in found if r not in out]
    return out


def checkpoint_file(experiment: str, slug: str, budget: str | None, seed: int, root=None) -> Path:
    """``results/checkpoints/<experiment>/<slug>-<budget>-seed<seed>.pt``."""
    return results_dir(root) / "checkpoints" / experiment / f"{slug}-{resolve_budget(budget)}-seed{seed}.pt"


@dataclass
class SpecModel:
    """A trained network named by its run spec: the spec, the learner, parameters and training record."""

    spec: object
    learner: MetaLearner
    params: Params
    history: History
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ms_per_step(self) -> float:
        return self.history.ms_per_step
