"""Small ready-made experiments that the chapters' figures and widgets call.

They are thin compositions of the package's public pieces (task families, learners, :func:`meta_train`,
:func:`adaptation_curve`), kept here so that notebooks stay short and the same computation serves the
live widget in Jupyter and the precomputed slider on the website.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .algorithms import make_learner
from .budgets import preset, resolve_budget
from .evaluation import AdaptationCurve, adaptation_curve
from .models import LinearModel
from .tasks import QuadraticTasks
from .training import meta_train
from .viz import COLORS, new_figure, plot_adaptation_curves

__all__ = ["ToyComparison", "toy_comparison", "toy_figure", "toy_objective_grid", "TOY_START",
           "REFERENCE_SEED", "REFERENCE_TASKS"]

TOY_START = (-1.5, 3.0)
# the large sample of tasks that stands for the family in the toy's closed forms (optima and contours):
# one sample for both, so each marked optimum sits exactly at the minimum of the contours drawn around it
REFERENCE_SEED, REFERENCE_TASKS = 12345, 4000
_LABELS = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "joint": "JointTraining"}


@dataclass
class ToyComparison:
    """Meta-training trajectories and test-time adaptation curves of several algorithms on the toy."""

    alpha: float
    beta: float
    steps: int
    trajectories: dict[str, np.ndarray]      # label -> [iterations+1, 2] parameters along meta-training
    curves: dict[str, AdaptationCurve]       # label -> adaptation curve of the final parameters
    maml_optimum: np.ndarray                 # closed form, over many tasks
    joint_optimum: np.ndarray
    family: QuadraticTasks


@functools.lru_cache(maxsize=64)
def toy_comparison(alpha: float = 0.1, beta: float = 0.05, steps: int = 1, *, budget: str | None = None,
                   seed: int = 0, algorithms: tuple[str, ...] = ("maml", "fomaml", "reptile", "joint"),
                   start: tuple[float, float] = TOY_START, test_steps: int = 10) -> ToyComparison:
    """Meta-train each algorithm from ``start`` on the 2-D quadratic toy with inner rate α, ``steps`` inner
    steps and outer Adam rate β; evaluate each result on fresh test tasks (α, 0..``test_steps`` steps).

    Iterations and test-task counts come from the ``toy_explorer`` preset of the budget. Results are cached,
    so moving a slider back is instant. Raises :class:`~metalearn_core.errors.DivergenceError` when the
    settings make training or adaptation diverge.
    """
    budget = resolve_budget(budget)
    cfg = preset("toy_explorer", budget)
    family = QuadraticTasks()
    model = LinearModel(2)
    trajectories, curves = {}, {}
    for name in algorithms:
        learner = make_learner(name, model, alpha=alpha, inner_steps=steps if name != "joint" else 0)
        result = meta_train(learner, family, budget=budget, seed=seed, iterations=cfg.iterations,
                            meta_batch=cfg.meta_batch, outer_lr=beta, log_every=cfg.log_every,
                            params=model.init(value=start), record_trajectory=True, progress=False)
        label = _LABELS[name]
        trajectories[label] = torch.stack([p["w"] for p in result.trajectory]).numpy()
        curves[label] = adaptation_curve(learner, result.params, family, steps=test_steps,
                                         n_tasks=cfg.eval_tasks, seed=seed, alpha=alpha, label=label)
    many = family.sample(REFERENCE_TASKS, seed=REFERENCE_SEED, dtype=torch.float64)
    return ToyComparison(alpha, beta, steps, trajectories, curves,
                         family.maml_optimum(many, alpha, steps).numpy(), family.joint_optimum(many).numpy(), family)


def toy_objective_grid(family: QuadraticTasks, alpha: float, steps: int, lim=(-2.5, 4.5), n: int = 80,
                       n_tasks: int = REFERENCE_TASKS):
    r"""The MAML objective :math:`J(\theta)=\frac1B\sum_T L^q_T(\theta'_T)` on a grid of θ (closed form).

    Returns ``(t1, t2, J)`` for a contour plot; ``J`` is a quadratic form, so it is exact and fast.
    """
    batch = family.sample(n_tasks, seed=REFERENCE_SEED, dtype=torch.float64)
    p = family.inner_map(batch.x_support, alpha, steps)
    m = p.transpose(-1, -2) @ family.hessian(batch.x_query) @ p           # [B, 2, 2]
    w = batch.info["w"][:, :, None]                                         # [B, 2, 1]
    # J(θ) = ½ mean_T (θ − w_T)ᵀ M_T (θ − w_T) = ½ θᵀ M̄ θ − θᵀ b + ½ c
    m_bar, b, c = m.mean(0), (m @ w).mean(0)[:, 0], (w.transpose(-1, -2) @ m @ w).mean()
    t = torch.linspace(*lim, n, dtype=torch.float64)
    t1, t2 = torch.meshgrid(t, t, indexing="xy")
    theta = torch.stack([t1, t2], -1).reshape(-1, 2)                       # [G, 2]
    j = 0.5 * ((theta @ m_bar) * theta).sum(1) - theta @ b + 0.5 * c
    return t1.numpy(), t2.numpy(), j.reshape(n, n).numpy()


def _view_box(comp: ToyComparison, pad: float = 0.35) -> tuple[float, float]:
    """A square view (same limits on both axes) that holds the start, every path and both optima."""
    pts = np.concatenate([*comp.trajectories.values(), np.array([TOY_START, comp.maml_optimum,
                                                                   comp.joint_optimum])])
    lo, hi = float(pts.min()), float(pts.max())
    return lo - pad, hi + pad


def toy_figure(alpha: float = 0.1, beta: float = 0.05, steps: int = 1, *, budget: str | None = None,
               seed: int = 0):
    """Left: meta-training trajectories over the MAML objective's contours, with the closed-form MAML and
    joint-training optima. Right: adaptation curves of the final parameters on fresh test tasks."""
    comp = toy_comparison(float(alpha), float(beta), int(steps), budget=budget, seed=seed)
    fig, (ax, ax2) = new_figure(ncols=2, width=5.2, height=4.8)
    lim = _view_box(comp)
    t1, t2, j = toy_objective_grid(comp.family, comp.alpha, comp.steps, lim=lim)
    levels = np.quantile(j, np.linspace(0.01, 0.9, 14))
    ax.contour(t1, t2, j, levels=np.unique(levels), colors="0.75", linewidths=0.8)
    for label, tr in comp.trajectories.items():
        ax.plot(tr[:, 0], tr[:, 1], "-", color=COLORS[label], lw=1.5, label=label)
        ax.plot(tr[-1, 0], tr[-1, 1], "o", color=COLORS[label], ms=5)
    ax.plot(*TOY_START, "ks", ms=6, label="start θ₀")
    ax.plot(*comp.maml_optimum, "*", color=COLORS["MAML"], ms=16, mec="k", label="MAML optimum (closed form)")
    ax.plot(*comp.joint_optimum, "P", color=COLORS["JointTraining"], ms=11, mec="k",
            label="joint-training optimum")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_title(f"Meta-training paths (α={comp.alpha:g}, β={comp.beta:g}, {comp.steps} inner step"
                 f"{'s' if comp.steps != 1 else ''})", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    plot_adaptation_curves(list(comp.curves.values()), ax2, logy=True,
                           title=f"Test-time adaptation with α={comp.alpha:g}")
    return fig
