"""Benchmark: one meta-step batched over tasks with torch.func.vmap vs a per-task Python loop.

Setting (the MAML paper's sinusoid regression): MLP 1-40-40-1, meta-batch of 25 tasks, K=10 support and
10 query points per task, one inner step. Both paths compute the same numbers (tests check that); this
script times them side by side, in interleaved rounds so machine noise hits both alike, and prints the
speed-up of vmap over the loop for MAML (second order), FOMAML and Reptile. Then it times whole training
steps (sampling, meta-gradient, Adam) of the four sinusoid runs of chapters 4 and 5, side by side, and one
redraw of chapter 4's adaptation widget (goal: < 1 s). Last, one meta-step of each Omniglot network of
chapter 7 at its ``cpu`` budget (width, meta-batch, episode size), interleaved, with the minutes its
``cpu`` training takes at that speed (goal: <= 20 minutes per method).

Usage:  python benchmarks/bench_meta_step.py [--rounds 7] [--calls 30] [--threads N] [--train-steps 300]
                                             [--omniglot-calls 3] [--no-widget]
Goal on 2 CPU cores: MAML speed-up >= 5x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import metalearn_core as ml
from metalearn_core.costs import time_per_call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median is reported)")
    ap.add_argument("--calls", type=int, default=30, help="meta-steps per round and path")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-widget", dest="widget", action="store_false",
                    help="skip timing a redraw of chapter 4's adaptation widget")
    ap.add_argument("--train-steps", type=int, default=300,
                    help="also time whole training steps of the sinusoid runs, this many per round (0: skip)")
    ap.add_argument("--omniglot-calls", type=int, default=3,
                    help="Omniglot meta-steps per network and round (0: skip the Omniglot section)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    family = ml.SinusoidTasks()
    model = ml.MLP((1, 40, 40, 1))
    params = model.init(seed=0)
    batch = family.sample(25, shots=10, queries=10, seed=0)
    print(f"sinusoid meta-step: {model!r}, 25 tasks, K=10, 1 inner step, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'algorithm':<10} {'vmap ms':>9} {'loop ms':>9} {'speed-up':>9}")
    ratios = {}
    for cls in (ml.MAML, ml.FOMAML, ml.Reptile):
        fast = cls(model, alpha=0.01, inner_steps=1, vectorize=True)
        slow = cls(model, alpha=0.01, inner_steps=1, vectorize=False)
        for learner in (fast, slow):      # warm-up (first calls build vmap/grad machinery)
            for _ in range(3):
                learner.meta_gradient(params, batch)
        t_fast, t_slow = [], []
        for _ in range(args.rounds):
            t_fast.append(time_per_call(lambda: fast.meta_gradient(params, batch), args.calls))
            t_slow.append(time_per_call(lambda: slow.meta_gradient(params, batch), max(args.calls // 5, 3)))
        f, s = statistics.median(t_fast), statistics.median(t_slow)
        ratios[cls.name] = s / f
        print(f"{cls.name:<10} {f:9.2f} {s:9.2f} {s / f:8.1f}x")
    verdict = "meets" if ratios["MAML"] >= 5 else "MISSES"
    print(f"MAML (second order) vmap speed-up: {ratios['MAML']:.1f}x ({verdict} the >= 5x goal)")

    if args.train_steps:
        # whole training steps as chapter 4/5 run them (sample a meta-batch, meta-gradient, Adam step), for
        # the four runs of the sinusoid experiment, interleaved like the meta-steps above
        from metalearn_core.experiments import sinusoid

        print(f"\nwhole meta-training steps of the sinusoid runs (meta-batch 25, {args.train_steps} steps per round)")
        print(f"{'run':<12} {'ms/step':>8} {'vs MAML':>8}")
        times = {spec.name: [] for spec in sinusoid.RUNS}
        for r in range(args.rounds):
            for spec in sinusoid.RUNS:
                result = ml.meta_train(spec.learner(), family, budget="cpu", experiment="sinusoid",
                                       iterations=args.train_steps, seed=r, progress=False)
                times[spec.name].append(result.history.ms_per_step)
        maml = statistics.median(times["MAML"])
        for name, t in times.items():
            print(f"{name:<12} {statistics.median(t):8.2f} {statistics.median(t) / maml:7.2f}x")

    if args.omniglot_calls:
        omniglot_steps(args.rounds, args.omniglot_calls)
        omniglot_ideas(args.rounds, args.omniglot_calls)

    if args.widget:
        # chapter 4's adaptation widget: one redraw (adapt on one task, mean curve over 100 tasks, draw) for
        # settings it has not seen yet, with the shipped checkpoints; goal: well under a second on 2 cores
        from metalearn_core.experiments import sinusoid
        from metalearn_core.widgets import AdaptationExplorer

        try:
            models = sinusoid.load_models(["MAML", "pre-trained"])
        except ml.CheckpointError as exc:
            print(f"\nadaptation widget: skipped ({exc})")
            return 0
        explorer = AdaptationExplorer(models, n_tasks=100)
        explorer.render(alpha=0.01, steps=1, shots=10, task=0)          # warm-up
        settings = [(a, s, k, t) for a in (0.003, 0.01, 0.02) for s in (1, 5, 10) for k in (5, 10) for t in (1, 2)]
        seconds = []
        for a, s, k, t in settings:
            start = time.perf_counter()
            ml.viz._render_safely(explorer.render, dict(alpha=a, steps=s, shots=k, task=t))
            seconds.append(time.perf_counter() - start)
        med, worst = statistics.median(seconds), max(seconds)
        print(f"\nadaptation widget redraw ({len(settings)} new settings): median {med:.2f} s, slowest {worst:.2f} s "
              f"({'meets' if worst < 1 else 'MISSES'} the < 1 s goal)")
    return 0


def omniglot_steps(rounds: int, calls: int, budget: str = "cpu") -> dict[str, float]:
    """Median ms per meta-step of each Omniglot network of chapter 7 at ``budget``, and its training minutes."""
    from metalearn_core.experiments import omniglot

    try:
        images = ml.load_omniglot()
    except ml.DataError as exc:
        print(f"\nOmniglot meta-steps: skipped ({exc})")
        return {}
    setups = {}
    for spec in omniglot.RUNS:
        cfg = ml.preset(spec.experiment, budget)
        learner = spec.learner(budget)
        family = ml.OmniglotTasks(images, "train", ways=spec.ways, rotations=True)
        meta_batch = cfg.meta_batch
        batch = family.sample(meta_batch, shots=spec.shots - (1 if spec.algorithm == "reptile" else 0),
                              queries=spec.queries, seed=0)
        params = learner.model.init(0)
        learner.meta_gradient(params, batch)                        # warm-up
        setups[spec.name] = (learner, params, batch, cfg, meta_batch)
    times = {name: [] for name in setups}
    for _ in range(rounds):
        for name, (learner, params, batch, *_rest) in setups.items():
            times[name].append(time_per_call(lambda: learner.meta_gradient(params, batch), calls))
    print(f"\nOmniglot meta-steps at the {budget!r} budget (each network's training episodes, "
          f"{torch.get_num_threads()} thread(s))")
    print(f"{'network':<20} {'width':>5} {'episodes':>8} {'ms/step':>8} {'iterations':>10} {'minutes':>8}")
    minutes = {}
    for name, (learner, params, batch, cfg, meta_batch) in setups.items():
        ms = statistics.median(times[name])
        minutes[name] = ms * cfg.iterations / 60_000
        print(f"{name:<20} {cfg.width:>5} {meta_batch:>8} {ms:8.0f} {cfg.iterations:>10} {minutes[name]:8.1f}")
    total = sum(minutes.values())
    print(f"training minutes in all (meta-steps only; sampling and validation add a little): {total:.0f} "
          f"({'meets' if max(minutes.values()) <= 60 and total <= 240 else 'MISSES'} the goal of <= 60 min a "
          f"network and <= 4 hours in all)")
    return minutes


def omniglot_ideas(rounds: int, calls: int) -> dict[str, float]:
    """Ideas for a faster Conv4 meta-step on a CPU, each timed side by side with the step the first shipped
    networks took ("today": MAML 5-way 1-shot, width 64, meta-batch 8, 5 queries per class): the ratio new / today,
    below 1 is faster. The 1-query step is the one chapter 7's 1-shot MAML and FOMAML networks now train with."""
    try:
        images = ml.load_omniglot()
    except ml.DataError as exc:
        print(f"\nOmniglot ideas: skipped ({exc})")
        return {}
    family = ml.OmniglotTasks(images, "train", ways=5, rotations=True)
    learner = ml.MAML(ml.Conv4(ways=5, width=64), alpha=0.4, loss=ml.omniglot.cross_entropy_loss)
    params = learner.model.init(0)
    today = family.sample(8, shots=1, queries=5, seed=0)
    channels_last = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                     for k, v in params.items()}
    ideas = {
        "today": lambda: learner.meta_gradient(params, today),
        # MAML's own code trains Omniglot with as many query drawings per class as support drawings
        "1 query per class (MAML's code)": (lambda b=family.sample(8, shots=1, queries=1, seed=0):
                                            learner.meta_gradient(params, b)),
        "channels-last weights": lambda: learner.meta_gradient(channels_last, today),
    }
    for fn in ideas.values():
        fn()                                                            # warm-up
    times = {name: [] for name in ideas}
    for _ in range(rounds):
        for name, fn in ideas.items():
            times[name].append(time_per_call(fn, calls))
    base = statistics.median(times["today"])
    print(f"\nfaster Omniglot meta-steps? MAML 5-way 1-shot, width 64, meta-batch 8, {torch.get_num_threads()} "
          f"thread(s); today {base:.0f} ms")
    ratios = {}
    for name in ideas:
        ratios[name] = statistics.median(times[name]) / base
        if name != "today":
            print(f"  {name:<34} {ratios[name]:5.2f}x today's time")
    return ratios


if __name__ == "__main__":
    raise SystemExit(main())
