"""Compute budgets: one setting, ``quick | cpu | full``.

A budget is chosen once, by the ``budget=`` argument of a function or, when that is left out, by the
environment variable ``METALEARN_BUDGET``; the default is ``cpu``.

* ``quick`` — seconds. What the tests and the continuous-integration build of the book run.
* ``cpu``   — a lecture's minutes on a 2-core laptop CPU. What the website shows.
* ``full``  — paper scale, meant for a GPU (e.g. on Colab).

The numbers behind each budget (iterations, meta-batch size, number of test tasks...) live in one table,
:data:`PRESETS`, keyed by experiment name. Code never branches on the budget name itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .errors import ConfigError

__all__ = ["BUDGETS", "PRESETS", "Preset", "resolve_budget", "preset"]

BUDGETS = ("quick", "cpu", "full")
ENV_VAR = "METALEARN_BUDGET"
DEFAULT_BUDGET = "cpu"


@dataclass(frozen=True)
class Preset:
    """What one budget means for one experiment.

    Attributes:
        iterations: number of meta-training steps (outer updates).
        meta_batch: tasks per outer update.
        outer_lr: learning rate β of the outer Adam optimiser.
        eval_tasks: number of test tasks that every mean ± 95% CI is computed over.
        log_every: how often (in iterations) the training loop records metrics.
        width: size of the network where the experiment scales it with the budget (filters per convolution
            of :class:`~metalearn_core.models.Conv4` for Omniglot); ``None`` where the architecture is fixed
            (the sinusoid MLP is the paper's at every budget). The training loop does not read it: the code
            that builds the model does, e.g. ``Conv4(ways=5, width=preset("omniglot").width)``.
        inner_steps: at most this many inner steps in meta-training for the experiment's second-order-style
            runs, where the budget cannot afford the paper's (Omniglot 20-way MAML: 5 steps at ``full``, 1 at
            ``cpu``); ``None`` keeps the paper's. Read by the experiment code, like ``width``.
        blocks: basic blocks per stage of a :class:`~metalearn_core.models.ResNet` (chapter 8: ``(1, 1, 1, 1)`` on
            a CPU, ResNet-18's ``(2, 2, 2, 2)`` at ``full``); ``None`` where there is no ResNet.
        val_tasks: validation episodes per check while training, where the experiment validates (Omniglot);
            ``None``: a sixth of ``eval_tasks``, at least 20.
    """

    iterations: int
    meta_batch: int
    outer_lr: float
    eval_tasks: int
    log_every: int = 10
    width: int | None = None
    inner_steps: int | None = None
    blocks: tuple[int, ...] | None = None
    val_tasks: int | None = None


PRESETS: dict[str, dict[str, Preset]] = {
    # Finn et al. (2017), sinusoid regression: meta-batch 25, Adam β=1e-3, 70,000 iterations.
    "sinusoid": {
        "quick": Preset(iterations=300, meta_batch=10, outer_lr=1e-3, eval_tasks=100, log_every=10),
        "cpu": Preset(iterations=70_000, meta_batch=25, outer_lr=1e-3, eval_tasks=600, log_every=100),
        "full": Preset(iterations=70_000, meta_batch=25, outer_lr=1e-3, eval_tasks=2000, log_every=100),
    },
    # Chapter 1's first look at MAML vs pre-training on sinusoids (chapter 4 runs the paper's 70,000).
    "sinusoid_intro": {
        "quick": Preset(iterations=300, meta_batch=10, outer_lr=1e-3, eval_tasks=100, log_every=10),
        "cpu": Preset(iterations=10_000, meta_batch=25, outer_lr=1e-3, eval_tasks=600, log_every=50),
        "full": Preset(iterations=70_000, meta_batch=25, outer_lr=1e-3, eval_tasks=2000, log_every=100),
    },
    # Chapter 4's meta-training explorer: 54 short runs over a grid of α, β, inner steps and algorithms
    # (precomputed by `python -m metalearn_core reproduce sinusoid`; the live widget runs one at a time).
    "sinusoid_explorer": {
        "quick": Preset(iterations=20, meta_batch=5, outer_lr=1e-3, eval_tasks=20, log_every=5),
        "cpu": Preset(iterations=2_000, meta_batch=25, outer_lr=1e-3, eval_tasks=200, log_every=50),
        "full": Preset(iterations=10_000, meta_batch=25, outer_lr=1e-3, eval_tasks=600, log_every=100),
    },
    # Omniglot (chapter 7), Conv4 networks with the papers' 64 filters. `full` is the papers' budget, for a GPU:
    # 60,000 iterations of 32 five-way episodes (MAML, FOMAML) or 16 twenty-way episodes with 5 second-order
    # inner steps (Finn et al., 2017); Reptile 100,000 / 200,000 iterations of 5 episodes (Nichol et al., 2018);
    # ProtoNets 60-way episodes (Snell et al., 2017). `cpu` is what one two-core machine trained for the shipped
    # networks, two at a time (one thread each), every network in 10-30 minutes (the whole reproduction about
    # an hour and a half, plus the tests):
    # meta-batches of 8 five-way episodes, 20-way MAML with one inner step in training (0.8 s a step at width 64
    # against 1.8 s with five), Reptile and ProtoNets with the papers' episodes but a few hundred to a thousand
    # steps. That is 1-3% of the papers' episodes; chapter 7 shows each validation curve and says which have not
    # flattened. `quick` only checks that everything runs (tests and the CI build of the book, seconds): its
    # accuracies mean nothing. eval_tasks: test episodes per setting.
    "omniglot": {
        "quick": Preset(iterations=20, meta_batch=4, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=4_000, meta_batch=8, outer_lr=1e-3, eval_tasks=600, log_every=25, width=64),
        "full": Preset(iterations=60_000, meta_batch=32, outer_lr=1e-3, eval_tasks=1000, log_every=200,
                       width=64),
    },
    "omniglot_5shot": {
        "quick": Preset(iterations=20, meta_batch=4, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=600, meta_batch=8, outer_lr=1e-3, eval_tasks=600, log_every=25, width=64),
        "full": Preset(iterations=60_000, meta_batch=32, outer_lr=1e-3, eval_tasks=1000, log_every=200,
                       width=64),
    },
    "omniglot_20way": {
        "quick": Preset(iterations=20, meta_batch=2, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8,
                        inner_steps=1),
        "cpu": Preset(iterations=1_500, meta_batch=4, outer_lr=1e-3, eval_tasks=200, log_every=25, width=64,
                      inner_steps=1),
        "full": Preset(iterations=60_000, meta_batch=16, outer_lr=1e-3, eval_tasks=1000, log_every=200,
                       width=64),
    },
    # Reptile as Nichol et al. ran Omniglot: meta-batches of 5 episodes with 10 training shots per class, inner
    # mini-batches (10 examples for 5 steps at 5-way, 20 for 10 steps at 20-way), 50 test steps. At width 64 a
    # 5-way step takes about 0.55 s on two cores and a 20-way step 2.1 s: 25 and 50 sequential inner steps. Testing
    # takes 50 steps on every episode, so `cpu` tests Reptile on far fewer episodes (60 and 20: three and one per
    # run), and its intervals are wider.
    "omniglot_reptile": {
        "quick": Preset(iterations=10, meta_batch=2, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=1_000, meta_batch=5, outer_lr=1e-3, eval_tasks=60, log_every=25, width=64,
                      val_tasks=50),
        "full": Preset(iterations=100_000, meta_batch=5, outer_lr=1e-3, eval_tasks=1000, log_every=500,
                       width=64),
    },
    "omniglot_reptile20": {
        "quick": Preset(iterations=10, meta_batch=2, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=50, meta_batch=5, outer_lr=1e-3, eval_tasks=20, log_every=10, width=64,
                      val_tasks=20),
        "full": Preset(iterations=200_000, meta_batch=5, outer_lr=1e-3, eval_tasks=1000, log_every=500,
                       width=64),
    },
    # Prototypical Networks as Snell et al. trained them: 60-way 1-shot episodes with 5 queries per class, one
    # episode a step (about 0.5 s at width 64 on two cores); tested 5- and 20-way.
    "omniglot_protonet": {
        "quick": Preset(iterations=20, meta_batch=1, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=2_000, meta_batch=1, outer_lr=1e-3, eval_tasks=600, log_every=25, width=64),
        "full": Preset(iterations=20_000, meta_batch=1, outer_lr=1e-3, eval_tasks=1000, log_every=200, width=64),
    },
    # the ProtoNet that takes the 5-shot test: trained as the one above, on the 161 characters that leave
    # Sanskrit and Tagalog out
    "omniglot_protonet_5shot": {
        "quick": Preset(iterations=20, meta_batch=1, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=1_500, meta_batch=1, outer_lr=1e-3, eval_tasks=600, log_every=25, width=64),
        "full": Preset(iterations=20_000, meta_batch=1, outer_lr=1e-3, eval_tasks=1000, log_every=200, width=64),
    },
    # Chapter 6 (TAML, Meta-SGD, the learned update) compares methods on the same budget and seed. The whole
    # `cpu` reproduction (4 sinusoid runs, 4 Omniglot runs, the 11 runs of the λ × measure grid, evaluation) fits in
    # about 20 minutes on two cores, so each run is short: sinusoids 5,000 iterations (Finn et al.: 70,000),
    # Omniglot 500 iterations of 4 five-way episodes with 16 filters (a second-order 5-way step took 0.18 s for
    # MAML, 0.25 s for TAML). `full` is the papers' scale, for a GPU.
    "taml_sinusoid": {
        "quick": Preset(iterations=100, meta_batch=10, outer_lr=1e-3, eval_tasks=50, log_every=10),
        "cpu": Preset(iterations=5_000, meta_batch=25, outer_lr=1e-3, eval_tasks=600, log_every=50),
        "full": Preset(iterations=70_000, meta_batch=25, outer_lr=1e-3, eval_tasks=2000, log_every=100),
    },
    "taml_omniglot": {
        "quick": Preset(iterations=10, meta_batch=2, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8),
        "cpu": Preset(iterations=500, meta_batch=4, outer_lr=1e-3, eval_tasks=600, log_every=25, width=16),
        "full": Preset(iterations=60_000, meta_batch=32, outer_lr=1e-3, eval_tasks=1000, log_every=200, width=64),
    },
    "taml_explorer": {
        "quick": Preset(iterations=20, meta_batch=5, outer_lr=1e-3, eval_tasks=20, log_every=5),
        "cpu": Preset(iterations=1_000, meta_batch=25, outer_lr=1e-3, eval_tasks=200, log_every=50),
        "full": Preset(iterations=5_000, meta_batch=25, outer_lr=1e-3, eval_tasks=600, log_every=100),
    },
    # Chapter 8 (transfer): pre-training a ResNet on the 712 classes of the training alphabets (178 characters × 4
    # rotations) as one classification, with mini-batches of 64 images (meta_batch 1 × (32 + 32)). At `cpu` a
    # ResNet of width 16 with one block per stage (ResNet-10 layout) takes about 65 ms a step on two cores; `full`
    # is ResNet-18 (width 64, two blocks per stage), for a GPU. eval_tasks: test episodes per setting (200 at
    # `cpu`: every episode is classified by up to eight classifiers, four of which train on its support set; with
    # 300 the whole reproduction took 26.8 min on two idle cores, with 200 it fits in 25).
    "transfer_pretrain": {
        "quick": Preset(iterations=20, meta_batch=1, outer_lr=1e-3, eval_tasks=20, log_every=5, width=8,
                        blocks=(1, 1, 1, 1)),
        "cpu": Preset(iterations=2_000, meta_batch=1, outer_lr=1e-3, eval_tasks=200, log_every=50, width=16,
                      blocks=(1, 1, 1, 1)),
        "full": Preset(iterations=30_000, meta_batch=1, outer_lr=1e-3, eval_tasks=1000, log_every=200, width=64,
                       blocks=(2, 2, 2, 2)),
    },
    # The quadratic toy (linear regression with exact targets): cheap at every budget.
    "quadratic": {
        "quick": Preset(iterations=200, meta_batch=10, outer_lr=2e-2, eval_tasks=100, log_every=5),
        "cpu": Preset(iterations=2_000, meta_batch=25, outer_lr=1e-2, eval_tasks=1000, log_every=10),
        "full": Preset(iterations=5_000, meta_batch=50, outer_lr=1e-2, eval_tasks=5000, log_every=10),
    },
    # The chapter-2 explorer: every frame meta-trains four algorithms on the toy, so runs are short.
    "toy_explorer": {
        "quick": Preset(iterations=60, meta_batch=10, outer_lr=5e-2, eval_tasks=100, log_every=2),
        "cpu": Preset(iterations=250, meta_batch=25, outer_lr=5e-2, eval_tasks=600, log_every=5),
        "full": Preset(iterations=250, meta_batch=25, outer_lr=5e-2, eval_tasks=1000, log_every=5),
    },
}


def resolve_budget(budget: str | None = None) -> str:
    """Return the budget name to use: ``budget`` if given, else ``$METALEARN_BUDGET``, else ``"cpu"``.

    Raises :class:`ConfigError` for an unknown name.
    """
    source = "budget"
    if budget is None:
        budget = os.environ.get(ENV_VAR) or DEFAULT_BUDGET
        source = ENV_VAR if os.environ.get(ENV_VAR) else "budget"
    name = str(budget).strip().lower()
    if name not in BUDGETS:
        raise ConfigError(f"unknown {source} {budget!r}: choose one of {', '.join(BUDGETS)}")
    return name


def preset(experiment: str, budget: str | None = None, **overrides) -> Preset:
    """The :class:`Preset` of ``experiment`` at ``budget`` (see :func:`resolve_budget`), with ``overrides``.

    >>> preset("sinusoid", "cpu").iterations
    70000
    """
    if experiment not in PRESETS:
        raise ConfigError(f"no budget presets for experiment {experiment!r}: known are {', '.join(PRESETS)}")
    base = PRESETS[experiment][resolve_budget(budget)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(Preset.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown preset field(s) {sorted(unknown)}: fields are {list(Preset.__dataclass_fields__)}")
    return replace(base, **overrides)
