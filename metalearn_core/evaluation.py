r"""Evaluation: adaptation curves with 95% confidence intervals over many test tasks.

An *adaptation curve* is a query score after 0, 1, ..., k inner steps on the support set, averaged over
fresh test tasks. The score depends on the family's ``metric`` (chosen in one place, :func:`query_score`):
the query loss (mean squared error) for regression, the fraction of correctly classified query examples for
``metric == "accuracy"``. Adaptation itself always descends the loss. Every number comes with the
half-width of a 95% confidence interval for the mean over tasks, :math:`t_{0.975,\,n-1}\, s/\sqrt n`
(s the sample standard deviation across the n tasks).

Test tasks are drawn from a random stream of their own (seeded with ``TEST_SEED_OFFSET + seed``), separate
from the training stream, so a meta-trained model is never evaluated on the tasks it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .algorithms import MetaLearner
from .allocator import keep_freed_memory
from .budgets import preset
from .errors import BLOWUP_FACTOR, ConfigError, DivergenceError, check_positive, check_positive_int
from .models import Params
from .tasks import TaskBatch, TaskFamily, make_generator

__all__ = ["AdaptationCurve", "diverged_tasks", "adaptation_losses", "adaptation_curve", "query_score",
           "mean_ci95", "group_mean_ci95", "mean_ci95_by_group", "t_critical", "TEST_SEED_OFFSET"]

TEST_SEED_OFFSET = 1_000_003

# two-sided 95% critical values of Student's t for 1..30 degrees of freedom; beyond 30 we interpolate in
# 1/df towards the normal 1.959964 (error < 0.002).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]
_Z975 = 1.959964


def t_critical(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    df = check_positive_int("degrees of freedom", df)
    if df <= 30:
        return _T975[df - 1]
    return _Z975 + (_T975[-1] - _Z975) * 30.0 / df


def mean_ci95(values) -> tuple[float, float]:
    """Mean and 95% CI half-width of ``values`` (1-D); the half-width is ``nan`` for a single value."""
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(t_critical(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def group_mean_ci95(values, groups) -> tuple[float, float, int]:
    """Mean of the group means of ``values`` and the 95% CI half-width over groups, and the number of groups.

    When test tasks come in groups that differ systematically (episodes of one alphabet), the interval over
    tasks only says how well *these* groups were measured; the interval over the group means also covers how
    much the score changes from one group (alphabet) to another, which is what a reader generalising to new
    alphabets needs. Every group counts once, however many tasks it holds.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if v.shape != g.shape:
        raise ValueError(f"values and groups must have the same length, got {v.size} and {g.size}")
    means = [v[g == k].mean() for k in np.unique(g)]
    mean, ci = mean_ci95(means)
    return mean, ci, len(means)


def mean_ci95_by_group(values, groups, min_groups: int = 3) -> tuple[float, float, int]:
    """Mean and 95% CI over groups (:func:`group_mean_ci95`) when ``groups`` holds at least ``min_groups``
    distinct groups, else over the values themselves (:func:`mean_ci95`); the third number is the count of groups,
    0 when the interval is over values (``groups`` ``None`` or too few)."""
    if groups is not None and len(np.unique(groups)) >= min_groups:
        return group_mean_ci95(values, groups)
    mean, ci = mean_ci95(values)
    return mean, ci, 0


@dataclass
class AdaptationCurve:
    """Query score (loss or accuracy, see ``metric``) after 0..k inner steps, over ``n_tasks`` test tasks.

    Attributes:
        steps: ``[k+1]`` the step counts 0..k, or only the steps that were measured (``record`` of
            :func:`adaptation_curve`); the other arrays have one column per entry, and methods take a step
            count, not a column.
        mean, ci95: ``[k+1]`` mean over tasks and 95% CI half-width.
        losses: ``[n_tasks, k+1]`` every task's curve, in the unit of ``metric`` (for ``"accuracy"`` these
            are per-task accuracies, not losses; the name is kept for compatibility).
        label, metric, shots, alpha: what was measured.
        transductive: whether the query examples of a task were predicted together (see
            :meth:`~metalearn_core.algorithms.MetaLearner.predict`).
        diverged: test tasks left out because adaptation diverged on them (see ``exclude_diverged``);
            ``n_tasks`` counts the tasks kept. With ``exclude_diverged="by step"``: the tasks that had diverged
            by the last step.
        kept: only with ``exclude_diverged="by step"``: ``[n_tasks, k+1]`` booleans, whether a task is in the
            statistics of each step (it has not diverged at or before that step); ``n_tasks`` then counts
            every task tested, and ``losses`` holds every task's raw curve.
        groups: ``[n_tasks]`` the group of every task (e.g. its alphabet) when the family's episodes carry
            ``info["group"]``, else ``None``; see :meth:`by_group` and :meth:`over_groups`.
        group_names: the names of the groups (the family's ``group_names``), when known.
    """

    steps: np.ndarray
    mean: np.ndarray
    ci95: np.ndarray
    losses: np.ndarray
    label: str = ""
    metric: str = "mse"
    shots: int = 0
    alpha: float = 0.0
    diverged: int = 0
    transductive: bool = True
    kept: np.ndarray | None = None
    groups: np.ndarray | None = None
    group_names: tuple = ()

    @property
    def n_tasks(self) -> int:
        return self.losses.shape[0]

    def column(self, step: int) -> int:
        """The column of ``losses`` (and index of ``mean``) that holds step ``step``."""
        found = np.nonzero(self.steps == step)[0]
        if found.size == 0:
            raise ConfigError(f"this curve measured steps {', '.join(str(int(s)) for s in self.steps)}, not {step}: "
                              f"evaluate with record=(..., {step}) or without record")
        return int(found[0])

    def _step_values(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if self.groups is None:
            raise ConfigError("this curve's tasks carry no groups: evaluate a family whose episodes record "
                              "info['group'] (e.g. OmniglotTasks(within_alphabet=True) or OneShotRunTasks)")
        col = self.column(step)
        keep = slice(None) if self.kept is None else self.kept[:, col]
        return self.losses[keep, col], self.groups[keep]

    def by_group(self, step: int) -> dict:
        """``{group name (or index): mean score}`` after ``step`` steps."""
        values, groups = self._step_values(step)
        names = self.group_names
        return {(names[int(k)] if int(k) < len(names) else int(k)): float(values[groups == k].mean())
                for k in np.unique(groups)}

    def over_groups(self, step: int) -> tuple[float, float, int]:
        """(mean of the group means, 95% CI over groups, number of groups) after ``step`` steps (see
        :func:`group_mean_ci95`)."""
        return group_mean_ci95(*self._step_values(step))

    def tasks_at(self, step: int) -> tuple[int, int]:
        """(tasks in the statistics of ``step``, tasks left out of them because they had diverged)."""
        if self.kept is None:
            return self.n_tasks, self.diverged
        n = int(self.kept[:, self.column(step)].sum())
        return n, self.n_tasks - n

    def at(self, step: int) -> tuple[float, float]:
        """(mean, ci95) after ``step`` inner steps."""
        col = self.column(step)
        return float(self.mean[col]), float(self.ci95[col])

    def summary(self, steps=(0, 1, 5, 10)) -> str:
        parts = [f"{s} step{'s' if s != 1 else ''}: {self.at(s)[0]:.3f} ± {self.at(s)[1]:.3f}"
                 for s in steps if s in self.steps]
        left_out = f", {self.diverged} more diverged" if self.diverged else ""
        return (f"{self.label or 'curve'} ({self.shots}-shot, α={self.alpha:g}, {self.n_tasks} tasks{left_out}) — "
                + "; ".join(parts))

    def __repr__(self) -> str:
        return f"AdaptationCurve({self.summary()})"


Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def query_score(family: TaskFamily) -> Score | None:
    """What an adaptation curve records for ``family``: the one place where evaluation depends on the metric.

    Returns ``None`` (record the learner's query loss, e.g. the mean squared error of regression) unless
    ``family.metric == "accuracy"``, where it returns ``family.accuracy(logits, labels)``, the fraction of
    query examples whose largest logit is at the true label.
    """
    if family.metric != "accuracy":
        return None
    score = getattr(family, "accuracy", None)
    if not callable(score):
        raise ConfigError(f"{family!r} reports metric 'accuracy' but has no accuracy(logits, labels) function")
    return score


def diverged_tasks(losses) -> np.ndarray:
    """``[n_tasks]`` booleans for ``losses`` ``[n_tasks, steps+1]``: which tasks' adaptation diverged.

    A task diverges when its query loss becomes NaN/inf or grows ``BLOWUP_FACTOR``-fold over its loss before
    adaptation (step 0).
    """
    losses = np.asarray(losses, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        return ~np.isfinite(losses).all(1) | (np.nan_to_num(losses, nan=np.inf).max(1)
                                              > BLOWUP_FACTOR * np.maximum(losses[:, 0], 1e-8))


def adaptation_losses(learner: MetaLearner, params: Params, batch: TaskBatch, steps: int,
                      alpha: float | None = None, trainable=None, *, score: Score | None = None,
                      transductive: bool = True) -> torch.Tensor:
    """``[B, steps+1]`` query loss of every task after 0..``steps`` inner steps of ``learner``.

    ``trainable`` optionally names the parameters adapted in the inner loop (the others stay frozen).
    ``score(prediction, y_query)``, if given, is recorded instead of the loss (e.g. the accuracy of a
    classifier); the inner steps still descend the loss. ``transductive`` chooses how query predictions are
    made (see :meth:`~metalearn_core.algorithms.MetaLearner.predict`).
    """
    losses, scores = _adaptation(learner, params, batch, steps, alpha, trainable, score, transductive)
    return losses if scores is None else scores


def _adaptation(learner, params, batch, steps, alpha, trainable, score, transductive, record=None):
    """(query losses, query scores or None), each ``[B, steps+1]`` (``[B, len(record)]``: only the steps in
    ``record`` are measured), in one pass over the inner steps."""
    steps = check_positive_int("steps", steps, minimum=0)
    record = range(steps + 1) if record is None else record
    alpha = learner.alpha if alpha is None else check_positive("α (alpha)", alpha)
    learner.check_batch(batch, where="the test tasks")
    trainable = learner.check_trainable(params, trainable)

    def measure(p, xs, ys, xq, yq):
        pred = learner.predict(p, xs, ys, xq, transductive=transductive)
        loss = learner.loss(pred, yq)
        return (loss, loss) if score is None else (loss, score(pred, yq))

    def curve(p, xs, ys, xq, yq):
        out = [measure(p, xs, ys, xq, yq)] if 0 in record else []
        for step in range(1, steps + 1):
            p = learner.inner_step(p, xs, ys, alpha, trainable=trainable)
            if step in record:
                out.append(measure(p, xs, ys, xq, yq))
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    params = {k: v.detach() for k, v in params.items()}
    # over the tasks with vmap or a loop, as the learner does in training (same numbers, speed differs)
    losses, scores = learner._map_tasks(curve, params, batch.x_support, batch.y_support, batch.x_query,
                                        batch.y_query)
    return losses.detach(), (None if score is None else scores.detach())


def adaptation_curve(learner: MetaLearner, params: Params, family: TaskFamily, *, steps: int = 10,
                     shots: int | None = None, queries: int | None = None, n_tasks: int | None = None,
                     budget: str | None = None, experiment: str | None = None, seed: int = 0,
                     alpha: float | None = None, label: str | None = None, chunk: int | None = None,
                     trainable=None, exclude_diverged: bool | str = False,
                     transductive: bool = True, record=None) -> AdaptationCurve:
    """Adapt ``params`` on fresh test tasks for 0..``steps`` steps; mean ± 95% CI of the query score.

    The score is chosen by :func:`query_score`: the query loss (MSE) for regression families, the query
    accuracy for families whose ``metric`` is ``"accuracy"`` (e.g. Omniglot).

    Args:
        shots: K support examples per test task (family default).
        queries: query examples per task used to measure the score, in the family's unit (per task for
            sinusoids, per class for Omniglot); default ``family.eval_queries`` (100 for sinusoids, so each
            task's loss is accurate; 15 per class for Omniglot, whose characters have 20 drawings).
        n_tasks: number of test tasks (default: the budget's ``eval_tasks``, ≥ 600 at ``cpu``).
        experiment: which preset table gives that default (default ``family.name``).
        seed: picks the test tasks (stream ``TEST_SEED_OFFSET + seed``, never the training stream).
        alpha: test-time inner learning rate (default: the learner's α).
        trainable: names of the parameters adapted at test time (default all; e.g. the last layer only
            for a linear probe).
        chunk: test tasks adapted at once (default ``family.eval_chunk``: 500 sinusoids, 20 Omniglot
            episodes, whose convolutions need far more memory); only memory and speed depend on it.
        exclude_diverged: instead of raising when adaptation diverges on some test tasks (loss NaN/inf, or
            10⁴ times its value before adaptation), leave those tasks out of every step's statistics and
            count them in ``curve.diverged``; results tables report that count next to the mean. With
            ``"by step"``, a task is left out only of the steps at and after the one where it diverged
            (``curve.kept``, ``curve.tasks_at(step)``): a learner whose few first steps are sound on every task
            but whose later ones diverge on some keeps all tasks in its early steps.
        transductive: predict each task's query examples together (default) or each one alone with the
            support set (see :meth:`~metalearn_core.algorithms.MetaLearner.predict`); only networks with
            batch statistics (:class:`~metalearn_core.models.Conv4`) give different numbers.
        record: the step counts to measure (default every one, 0..``steps``); measuring costs a forward pass
            over the query set (one per query example when not ``transductive``), so a table that reads three
            steps of fifty should record only those. The curve then has one column per recorded step
            (``curve.steps``), and divergence is judged on those steps only.

    Divergence is always judged on the query *loss* (also when the curve records accuracy).

    Raises:
        DivergenceError: some task's loss became NaN/inf — α is too large for these tasks.
    """
    if isinstance(exclude_diverged, str) and exclude_diverged != "by step":
        raise ConfigError(f"exclude_diverged must be True, False or 'by step', got {exclude_diverged!r}")
    n_tasks = n_tasks if n_tasks is not None else preset(experiment or family.name, budget).eval_tasks
    n_tasks = check_positive_int("n_tasks", n_tasks)
    steps = check_positive_int("steps", steps, minimum=0)
    if record is not None:
        bad = [s for s in record if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 0 <= s <= steps]
        if bad or not len(record):
            raise ConfigError(f"record must list step counts between 0 and steps={steps}, got {record!r}")
        record = sorted({int(s) for s in record})
    generator = make_generator(TEST_SEED_OFFSET + seed)
    keep_freed_memory()                  # no page faults for every chunk's activations (see allocator)
    alpha = learner.alpha if alpha is None else check_positive("α (alpha)", alpha)
    queries = getattr(family, "eval_queries", 100) if queries is None else queries
    chunk = check_positive_int("chunk", getattr(family, "eval_chunk", 500) if chunk is None else chunk)
    score = query_score(family)
    first = next(iter(params.values()))
    dtype, device = first.dtype, first.device
    chunks, score_chunks, group_chunks = [], [], []
    for start in range(0, n_tasks, chunk):
        batch = family.sample(min(chunk, n_tasks - start), shots=shots, queries=queries, generator=generator,
                              dtype=dtype).to(device)
        losses, scores = _adaptation(learner, params, batch, steps, alpha, trainable, score, transductive, record)
        chunks.append(losses)
        score_chunks.append(scores)
        group_chunks.append(batch.info.get("group"))
    groups = None if any(g is None for g in group_chunks) else torch.cat(group_chunks).cpu().numpy()
    losses = torch.cat(chunks).double().cpu().numpy()
    # the recorded values: the losses themselves for regression, accuracies for classification
    values = losses if score is None else torch.cat(score_chunks).double().cpu().numpy()
    measured = np.arange(steps + 1) if record is None else np.array(record)
    n_cols = len(measured)

    def finish(values, diverged, kept=None):
        """The curve: mean ± CI at each step over every task, or over the tasks ``kept`` at that step."""
        stats = [mean_ci95(values[:, s] if kept is None else values[kept[:, s], s]) for s in range(n_cols)]
        return AdaptationCurve(steps=measured, mean=np.array([m for m, _ in stats]),
                               ci95=np.array([c for _, c in stats]), losses=values,
                               label=label if label is not None else learner.name, metric=family.metric,
                               shots=shots if shots is not None else family.default_shots, alpha=alpha,
                               diverged=diverged, transductive=bool(transductive), kept=kept,
                               groups=groups, group_names=tuple(getattr(family, "group_names", ())))

    diverged = 0
    if exclude_diverged == "by step":
        kept = ~np.stack([diverged_tasks(losses[:, :s + 1]) for s in range(n_cols)], axis=1)
        if kept.sum(0).min() < 2:
            raise DivergenceError(
                f"adaptation diverged on {n_tasks - int(kept.sum(0).min())} of {n_tasks} test tasks with "
                f"α={alpha:g} within {steps} steps, leaving too few for a confidence interval; use a smaller α or "
                f"fewer steps (meta-training used α={learner.alpha:g})")
        return finish(values, int((~kept[:, -1]).sum()), kept)
    if exclude_diverged:
        # diverged tasks are dropped whole (every step), so the curve is over one set of tasks
        bad = diverged_tasks(losses)
        diverged = int(bad.sum())
        if diverged == n_tasks:
            raise DivergenceError(
                f"adaptation diverged on all {n_tasks} test tasks with α={alpha:g}; use a smaller α "
                f"(meta-training used α={learner.alpha:g})")
        if n_tasks - diverged < 2:
            raise DivergenceError(
                f"adaptation diverged on {diverged} of {n_tasks} test tasks with α={alpha:g}, leaving too few "
                f"for a confidence interval; use a smaller α (meta-training used α={learner.alpha:g})")
        losses, values = losses[~bad], values[~bad]
        groups = None if groups is None else groups[~bad]
    if not np.isfinite(losses).all():
        bad_step = int(measured[int(np.argmax(~np.isfinite(losses).all(0)))])
        n_bad = int((~np.isfinite(losses).all(1)).sum())
        raise DivergenceError(
            f"adaptation diverged: with α={alpha:g} the query loss became NaN/inf after {bad_step} inner "
            f"step(s) on {n_bad} of {n_tasks} test tasks; use a smaller α (meta-training used α={learner.alpha:g})")
    means = losses.mean(0)
    if means.max() > BLOWUP_FACTOR * max(means[0], 1e-8):
        col = int(np.argmax(means))
        before = "before adaptation" if measured[0] == 0 else f"after {measured[0]} step(s)"
        raise DivergenceError(
            f"adaptation diverged: with α={alpha:g} the mean query loss grew from {means[0]:.3g} {before} to "
            f"{means[col]:.3g} after {int(measured[col])} inner step(s); use a smaller α (meta-training used "
            f"α={learner.alpha:g})")
    return finish(values, diverged)
