"""Result files: the numbers the book shows, as a list of rows written by our scripts.

A results file (``results/<experiment>.json``) is a JSON list of rows. Every row is one measured number:

=============  ====================================================================================
field          meaning
=============  ====================================================================================
experiment     e.g. ``"sinusoid"``
algorithm      e.g. ``"MAML"``, ``"pre-trained"``
setting        the test condition, e.g. ``"5-shot"``
metric         ``"mse"``, ``"accuracy"`` or ``"error"`` (accuracies and errors in percent)
steps          inner gradient steps taken at test time
mean, ci95     mean over test tasks and the half-width of its 95% confidence interval
n_tasks        number of test tasks the mean is over
budget         ``quick``, ``cpu`` or ``full``: how the model was trained
seed           the training seed
=============  ====================================================================================

Rows may carry more fields (``test_seed``, ``alpha``, ``iterations``, ``ms_per_step``, ``published``,
``diverged_tasks``: test tasks left out because adaptation diverged on them...).
Writing merges: a new row replaces an old one measuring the same thing (same experiment, algorithm,
setting, metric, steps, budget, seed and test seed); other rows are kept, so a ``quick`` run never erases
the ``cpu`` numbers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .budgets import BUDGETS
from .errors import ConfigError

__all__ = ["REQUIRED_FIELDS", "METRICS", "results_dir", "validate_row", "read_results", "write_results",
           "select", "table_cells", "format_table", "text_table"]

REQUIRED_FIELDS = {"experiment": str, "algorithm": str, "setting": str, "metric": str, "steps": int,
                   "mean": float, "ci95": float, "n_tasks": int, "budget": str, "seed": int}
METRICS = ("mse", "accuracy", "error")
ENV_VAR = "METALEARN_RESULTS"
_KEY = ("experiment", "algorithm", "setting", "metric", "steps", "budget", "seed", "test_seed")


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """Where result files and checkpoints live.

    Search order: ``path`` if given, else ``$METALEARN_RESULTS``, else the ``results/`` folder of the
    book's repository when the package runs from a checkout of it (``make``, ``pip install -e``, Colab
    after the set-up cell), else ``./results``.
    """
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "_toc.yml").is_file():
        return repo / "results"
    return Path.cwd() / "results"


def validate_row(row: dict, where: str = "a results row") -> dict:
    """Check that ``row`` has the required fields with the right types; return it (numbers as float/int)."""
    if not isinstance(row, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise ConfigError(f"{where} lacks the field(s) {missing}; every row needs {list(REQUIRED_FIELDS)}")
    out = dict(row)
    for k, kind in REQUIRED_FIELDS.items():
        v = row[k]
        if kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            out[k] = float(v) if ok else v
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str) and v != ""
        if not ok:
            raise ConfigError(f"{where}: field {k!r} must be a {kind.__name__}, got {v!r}")
    if out["metric"] not in METRICS:
        raise ConfigError(f"{where}: metric must be one of {METRICS}, got {out['metric']!r}")
    if out["budget"] not in BUDGETS:
        raise ConfigError(f"{where}: budget must be one of {BUDGETS}, got {out['budget']!r}")
    if out["steps"] < 0 or out["n_tasks"] < 1:
        raise ConfigError(f"{where}: steps must be >= 0 and n_tasks >= 1, got {out['steps']} and {out['n_tasks']}")
    if not math.isfinite(out["mean"]):
        raise ConfigError(f"{where}: mean must be a finite number, got {out['mean']}")
    return out


def read_results(path: str | os.PathLike) -> list[dict]:
    """The validated rows of a results file; a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {path}: create it with `python -m metalearn_core reproduce "
            f"{path.stem} --budget cpu` (or quick, for a test run)")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-create it with `python -m metalearn_core "
                          f"reproduce {path.stem}`") from None
    if not isinstance(rows, list):
        raise ConfigError(f"{path} must hold a JSON list of rows, got {type(rows).__name__}")
    return [validate_row(r, f"row {i} of {path}") for i, r in enumerate(rows)]


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in _KEY)


def write_results(path: str | os.PathLike, rows: Iterable[dict], *,
                  replace: Callable[[dict], bool] | None = None) -> Path:
    """Validate ``rows`` and merge them into the file at ``path`` (see the module docstring); return it.

    ``replace(row)``: rows already in the file for which it is true are dropped first, e.g. every row of the
    budget and seed being re-run, so that no row of an earlier protocol survives beside the new ones.
    """
    path = Path(path)
    new = [validate_row(r) for r in rows]
    old = read_results(path) if path.is_file() else []
    if replace is not None:
        old = [r for r in old if not replace(r)]
    keys = {_key(r) for r in new}
    merged = [r for r in old if _key(r) not in keys] + new
    merged.sort(key=lambda r: (r["experiment"], r["budget"], r["seed"], r.get("test_seed", 0), r["setting"],
                               r["algorithm"], r["metric"], r["steps"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in merged) + "\n]\n")
    tmp.replace(path)
    return path


def select(rows: Sequence[dict], **where) -> list[dict]:
    """The rows whose fields equal every ``field=value`` given (``None`` values are ignored)."""
    return [r for r in rows if all(v is None or r.get(k) == v for k, v in where.items())]


def table_cells(rows: Sequence[dict], steps: Sequence[int] = (1, 5, 10), *, digits: int = 2
                ) -> tuple[list[str], list[list[str]]]:
    """``(header, lines)`` of the results table: one line per (setting, algorithm), one column per step count.

    Cells read ``mean ± ci95``; a ``published`` field, when present, is shown in brackets after the cell, and
    a † marks a row whose ``diverged_tasks`` is not zero (some test tasks were left out).
    """
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["algorithm"]), {})[r["steps"]] = r
    head = ["setting", "algorithm"] + [f"{s} step{'s' if s != 1 else ''}" for s in steps]
    lines = []
    # settings in order of their number of shots when rows say it (5-shot before 10-shot), else as given
    order = {key: i for i, key in enumerate(groups)}
    shots = {key: min(r.get("shots", 0) for r in by_step.values()) for key, by_step in groups.items()}
    first_of_setting = {}
    for key in groups:
        first_of_setting.setdefault(key[0], order[key])
    keys = sorted(groups, key=lambda k: (shots[k], first_of_setting[k[0]], order[k]))
    for setting, algo in keys:
        by_step = groups[setting, algo]
        cells = [setting, algo]
        for s in steps:
            r = by_step.get(s)
            if r is None:
                cells.append("–")
                continue
            cell = f"{r['mean']:.{digits}f} ± {r['ci95']:.{digits}f}" + ("†" if r.get("diverged_tasks") else "")
            if r.get("published") is not None:
                cell += f" [{r['published']:.{digits}f}]"
            cells.append(cell)
        lines.append(cells)
    return head, lines


def format_table(rows: Sequence[dict], steps: Sequence[int] = (1, 5, 10), *, digits: int = 2,
                 markdown: bool = False) -> str:
    """The table of :func:`table_cells` as aligned text (or Markdown); see :func:`metalearn_core.viz.html_table`
    for notebooks and the website."""
    head, lines = table_cells(rows, steps, digits=digits)
    if not lines:
        return "(no rows)"
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    return text_table(head, lines, align_left=2)


def text_table(head: Sequence[str], lines: Sequence[Sequence[object]], *, align_left: int = 1) -> str:
    """Aligned plain text of a table, the text twin of :func:`metalearn_core.viz.html_table`: the first
    ``align_left`` columns left-aligned (labels), the others right-aligned (numbers), a rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]

    def fmt(cells):
        return "  ".join(str(c).ljust(w) if i < align_left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(c) for c in lines])
