"""The command line: ``python -m metalearn_core reproduce|evaluate EXPERIMENT [options]``.

.. code-block:: text

    python -m metalearn_core reproduce sinusoid --budget cpu --seed 0
    python -m metalearn_core evaluate sinusoid --seed 7 --tasks 1000
    python -m metalearn_core list

``reproduce`` trains what the chapters need and writes ``results/<experiment>.json`` plus checkpoints;
``evaluate`` re-evaluates the shipped checkpoints on fresh test tasks from any seed and prints the table.
Errors (unknown experiment, missing checkpoint, bad option) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from .budgets import BUDGETS
from .errors import MetaLearnError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .experiments import EXPERIMENTS

    names = ", ".join(EXPERIMENTS)
    ap = argparse.ArgumentParser(prog="python -m metalearn_core", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="{reproduce,evaluate,list}")
    sub.required = True

    rep = sub.add_parser("reproduce", help="train an experiment's models and write results/<experiment>.json")
    rep.add_argument("experiment", help=f"one of: {names}")
    rep.add_argument("--budget", choices=BUDGETS, default=None,
                     help="quick (seconds), cpu (paper scale on a laptop) or full (GPU); default "
                          "$METALEARN_BUDGET or cpu")
    rep.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    rep.add_argument("--results", default=None, metavar="DIR",
                     help="where results and checkpoints go (default: the repository's results/)")
    rep.add_argument("--no-explorer", action="store_true", help="skip the grid of the meta-training explorer")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="omniglot: networks trained at a time, one thread each (default 2, as the shipped ones)")
    rep.add_argument("--reuse", action="store_true",
                     help="evaluate existing checkpoints of this budget and seed instead of retraining them")

    ev = sub.add_parser("evaluate", help="re-evaluate shipped checkpoints on fresh test tasks")
    ev.add_argument("experiment", help=f"one of: {names}")
    ev.add_argument("--seed", type=int, default=0, help="test seed: which fresh test tasks (default 0)")
    ev.add_argument("--tasks", type=int, default=None, help="number of test tasks (default: the budget's, 600 at cpu)")
    ev.add_argument("--budget", choices=BUDGETS, default="cpu",
                    help="evaluate the checkpoints trained at this budget (default cpu: the shipped ones)")
    ev.add_argument("--train-seed", type=int, default=0, help="evaluate the checkpoints of this training seed")
    ev.add_argument("--results", default=None, metavar="DIR", help="where the checkpoints are")
    ev.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="omniglot: test curves computed at a time, one process and thread each (default 2)")

    sub.add_parser("list", help="list the experiments")
    return ap


def _jobs(fn, args) -> dict:
    """``{"jobs": N}`` when ``--jobs`` was given and the experiment's command takes it."""
    import inspect

    if args.jobs is None:
        return {}
    if "jobs" not in inspect.signature(fn).parameters:
        raise MetaLearnError(f"--jobs applies to the omniglot experiment only, not {args.experiment!r}: leave it out")
    if args.jobs < 1:
        raise MetaLearnError(f"--jobs must be at least 1 (processes at a time), got {args.jobs}")
    return {"jobs": args.jobs}


def main(argv=None) -> int:
    from .experiments import EXPERIMENTS, get_experiment

    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name, module in EXPERIMENTS.items():
                print(f"{name:<10} {module.__doc__.strip().splitlines()[0]}")
            return 0
        exp = get_experiment(args.experiment)
        if args.command == "reproduce":
            extra = _jobs(exp.reproduce, args)
            exp.reproduce(args.budget, args.seed, args.results, explorer=not args.no_explorer,
                          progress=not args.no_progress, reuse=args.reuse, **extra)
        else:
            if args.tasks is not None and args.tasks < 2:
                raise MetaLearnError(f"--tasks must be at least 2 (a confidence interval needs two tasks), "
                                     f"got {args.tasks}")
            exp.evaluate(args.seed, args.tasks, budget=args.budget, train_seed=args.train_seed, root=args.results,
                         **_jobs(exp.evaluate, args))
    except (MetaLearnError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
