r"""The book's sinusoid widgets, each live (ipywidgets) and static (precomputed sliders).

* :class:`AdaptationExplorer` — test-time adaptation of trained initialisations: sliders for the test-time
  step size α, the number of inner steps and the number of support points K, and a button for a new task.
  It redraws the fitted functions and the adaptation curves (this task, and the mean ± 95% CI over many
  test tasks) in well under a second: everything is one ``vmap``-batched inner loop of a small MLP.
* :class:`MetaTrainingExplorer` — meta-training itself: pick an algorithm, α, β and inner steps, press
  *Train*, and watch the learning curve grow with a progress bar; the adaptation curve of the result follows.
  On the static website the same figure comes from a precomputed grid of runs
  (:func:`metalearn_core.experiments.sinusoid.compute_explorer`).

* :class:`TAMLExplorer` — chapter 6: TAML's weight λ and its inequality measure, over a precomputed grid of
  runs (:func:`metalearn_core.experiments.taml.compute_explorer`); adaptation curves against MAML (λ = 0) and
  how unequal the test tasks' losses are.

* :class:`FineTuneExplorer` — chapter 8: fine-tuning a pre-trained ResNet on digit episodes, over a precomputed
  grid of learning rates and frozen stages (:func:`metalearn_core.experiments.transfer.explorer_grid`).

All draw with one render function for the live and the static version, and show a message instead of a
plot when a setting diverges.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np
import torch

from . import viz
from .errors import ConfigError, DivergenceError
from .evaluation import TEST_SEED_OFFSET, adaptation_curve, adaptation_losses, diverged_tasks
from .tasks import SinusoidTasks

__all__ = ["AdaptationExplorer", "MetaTrainingExplorer", "TAMLExplorer", "FineTuneExplorer"]

# the "new task" stream of the adaptation explorer: test tasks, separate from training and from the tables
_TASK_STREAM = TEST_SEED_OFFSET + 77


class AdaptationExplorer:
    """Adapt trained initialisations to sinusoid test tasks and draw what happens.

    Args:
        models: ``{label: (learner, params)}`` or ``{label: TrainedModel}`` (anything with ``.learner`` and
            ``.params``), e.g. the output of :func:`metalearn_core.experiments.sinusoid.load_models`.
        n_tasks: test tasks behind the mean adaptation curve drawn next to the single task.
        max_steps: the x-axis of the adaptation curves runs from 0 to this many steps.
    """

    def __init__(self, models: Mapping[str, object], *, n_tasks: int = 100, max_steps: int = 10, seed: int = 0):
        if not models:
            raise ConfigError("AdaptationExplorer needs at least one trained model")
        self.models = {k: (v if isinstance(v, tuple) else (v.learner, v.params)) for k, v in models.items()}
        self.family = SinusoidTasks()
        self.n_tasks = int(n_tasks)
        self.max_steps = int(max_steps)
        self.seed = int(seed)
        self._x = torch.linspace(-5, 5, 200)[:, None]

    @functools.lru_cache(maxsize=64)
    def task(self, index: int, shots: int):
        """Test task number ``index`` (a fixed stream, so a task looks the same at every K)."""
        g = torch.Generator().manual_seed(_TASK_STREAM + 1000 * self.seed + int(index))
        return self.family.sample(1, shots=shots, queries=100, generator=g)

    @functools.lru_cache(maxsize=128)
    def mean_curve(self, label: str, alpha: float, shots: int):
        """Mean ± 95% CI of the query MSE over ``n_tasks`` test tasks (cached per setting).

        Test tasks on which adaptation diverges are left out and counted (``curve.diverged``).
        """
        learner, params = self.models[label]
        return adaptation_curve(learner, params, self.family, steps=self.max_steps, shots=shots, queries=100,
                                n_tasks=self.n_tasks, seed=self.seed, alpha=alpha, label=label,
                                exclude_diverged=True)

    def adapted(self, label: str, alpha: float, steps: int, shots: int, task: int):
        """(prediction on the x grid after ``steps`` steps, this task's query-MSE curve for 0..max_steps)."""
        learner, params = self.models[label]
        batch = self.task(task, shots)
        xs, ys = batch.x_support[0], batch.y_support[0]
        p = {k: v.detach() for k, v in params.items()}
        p = learner.adapt(p, xs, ys, steps=steps, alpha=alpha)
        with torch.no_grad():
            pred = learner.model(p, self._x)[:, 0]
        curve = adaptation_losses(learner, params, batch, max(self.max_steps, steps), alpha)[0]
        return pred, curve

    def render(self, alpha: float = 0.01, steps: int = 1, shots: int = 10, task: int = 0):
        """Two panels: the fitted functions on one task, and the adaptation curves."""
        fig, (ax1, ax2) = viz.new_figure(ncols=2, width=4.6, height=3.4)
        batch = self.task(task, shots)
        a, ph = float(batch.info["amplitude"][0]), float(batch.info["phase"][0])
        x = self._x[:, 0]
        ax1.plot(x, SinusoidTasks.function(a, ph, x), color="k", lw=2, alpha=0.35, label="true function")
        ax1.plot(batch.x_support[0, :, 0], batch.y_support[0, :, 0], "k^", ms=7, label=f"K={shots} support points")
        for i, label in enumerate(self.models):
            pred, curve = self.adapted(label, alpha, steps, shots, task)
            if diverged_tasks(curve[None].numpy())[0]:
                raise DivergenceError(
                    f"adapting the {label} model with α={alpha:g} diverges on this task (its loss grows without "
                    f"bound): use a smaller α")
            col = viz.COLORS.get(label, f"C{i}")
            ax1.plot(x, pred, color=col, lw=1.8, label=f"{label}, {steps} step{'s' if steps != 1 else ''}")
            mc = self.mean_curve(label, float(alpha), int(shots))
            ax2.plot(np.arange(len(curve)), curve.numpy(), "--", color=col, lw=1.2, label=f"{label}: this task")
            left_out = f", {mc.diverged} diverged" if mc.diverged else ""
            ax2.plot(mc.steps, mc.mean, "o-", ms=3, color=col, label=f"{label}: mean of {mc.n_tasks} tasks{left_out}")
            ax2.fill_between(mc.steps, np.maximum(mc.mean - mc.ci95, 1e-3), mc.mean + mc.ci95, color=col,
                             alpha=0.15, lw=0)
        ax1.set_ylim(-6, 6)
        ax1.set_xlabel("x")
        ax1.set_ylabel("y")
        ax1.set_title(f"Test task {task + 1}: fit after {steps} step{'s' if steps != 1 else ''} of α={alpha:g}",
                      fontsize=10)
        ax1.legend(fontsize=7, loc="lower left")
        ax1.grid(alpha=0.3)
        ax2.axvline(steps, color="0.5", lw=0.8, ls=":")
        viz.log_y(ax2)
        ax2.set_ylim(0.01, 30)            # fixed, so that frames compare like with like
        ax2.set_xlabel("inner gradient steps")
        ax2.set_ylabel("query MSE")
        ax2.set_title(f"Adaptation curves, K={shots}, α={alpha:g}", fontsize=10)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
        return fig

    LABELS = {"alpha": "test-time α", "steps": "inner steps", "shots": "K (support points)", "task": "test task"}

    def live(self, alphas: Sequence[float] = (0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3),
             steps: Sequence[int] = (0, 1, 2, 3, 5, 10), shots: Sequence[int] = (2, 5, 10, 20),
             initial: Mapping | None = None):
        """ipywidgets version: sliders plus a *New task* button."""
        n_live_tasks = 1000
        grid = {"alpha": list(alphas), "steps": list(steps), "shots": list(shots), "task": list(range(n_live_tasks))}

        def new_task(sliders):
            sliders["task"].value = (sliders["task"].value + 1) % n_live_tasks

        box = viz.live_explorer(self.render, grid, labels=self.LABELS,
                                initial=initial or {"alpha": 0.01, "steps": 1, "shots": 10},
                                buttons={"New task": new_task})
        box.sliders["task"].layout.display = "none"   # the button moves through tasks; no slider needed
        return box

    def static(self, alphas: Sequence[float] = (0.003, 0.01, 0.03, 0.3), steps: Sequence[int] = (0, 1, 5, 10),
               shots: Sequence[int] = (5, 10, 20), tasks: int = 2, dpi: int = 72):
        """Precomputed sliders (no kernel needed): every combination of the values given."""
        grid = {"alpha": list(alphas), "steps": list(steps), "shots": list(shots), "task": list(range(tasks))}
        preferred = {"alpha": 0.01, "steps": 1, "shots": 10, "task": 0}
        initial = {k: v for k, v in preferred.items() if v in grid[k]}   # others start at their first value
        return viz.static_explorer(self.render, grid, labels={**self.LABELS, "task": "test task (0, 1, …)"},
                                   initial=initial,
                                   title="Adapting trained initialisations to a new task", dpi=dpi)


class MetaTrainingExplorer:
    """Meta-train on sinusoids with chosen α, β, inner steps and algorithm; draw learning and adaptation curves.

    Args:
        grid: the precomputed explorer document (:func:`metalearn_core.experiments.sinusoid.load_explorer`),
            used by :meth:`static` and :meth:`render` (optional for :meth:`live` and :meth:`run`).
        seed: training seed of live runs.
    """

    LABELS = {"algorithm": "algorithm", "alpha": "α (inner)", "outer_lr": "β (outer)", "inner_steps": "inner steps"}
    YLIM = (0.1, 8.0)

    def __init__(self, grid: dict | None = None, *, seed: int = 0):
        self.grid = grid
        self.seed = seed

    # ---- one run ---------------------------------------------------------------------------------------------
    def run(self, algorithm: str = "MAML", alpha: float = 0.01, outer_lr: float = 1e-3, inner_steps: int = 1, *,
            iterations: int = 2000, budget: str = "cpu", on_log=None) -> dict:
        """Meta-train one setting; ``on_log(iteration, metrics, history_so_far)`` is called as it goes.

        Returns the same kind of dict as a point of the precomputed grid (see :meth:`render_entry`).
        """
        from .experiments.sinusoid import train_explorer_point

        log = {"iterations": [], "loss": [], "loss_before": []}

        def callback(it, metrics, _params):
            log["iterations"].append(it)
            log["loss"].append(metrics["loss"])
            log["loss_before"].append(metrics["loss_before"])
            if on_log is not None:
                on_log(it, metrics, log)

        return train_explorer_point(algorithm, alpha, outer_lr, inner_steps, budget=budget, seed=self.seed,
                                    iterations=iterations, callbacks=[callback])

    # ---- drawing ------------------------------------------------------------------------------------------------
    def render_entry(self, entry: dict, *, total_iterations: int | None = None):
        """Learning curve (left) and 5-shot adaptation curve (right) of one run (finished or in progress)."""
        if entry.get("error"):
            return viz.message_figure(entry["error"], title="Meta-training diverges with this setting")
        fig, (ax1, ax2) = viz.new_figure(ncols=2, width=4.6, height=3.4)
        h = entry["history"]
        ax1.plot(h["iterations"], h["loss_before"], color="0.55", lw=1.2, label="before adaptation (at θ)")
        ax1.plot(h["iterations"], h["loss"], color="C0", lw=1.6, label="meta-objective (after adaptation)")
        if total_iterations:
            ax1.set_xlim(0, total_iterations)
        viz.log_y(ax1)
        ax1.set_ylim(*self.YLIM)          # fixed axes, so that moving a slider compares like with like
        ax1.set_xlabel("meta-training iteration")
        ax1.set_ylabel("training loss (meta-batch mean)")
        ax1.set_title(f"{entry['algorithm']}: α={entry['alpha']:g}, β={entry['outer_lr']:g}, "
                      f"{entry['inner_steps']} inner step{'s' if entry['inner_steps'] != 1 else ''}", fontsize=10)
        ax1.legend(fontsize=7)
        ax1.grid(alpha=0.3)
        curve = entry.get("curve")
        if curve:
            mean, ci = np.array(curve["mean"]), np.array(curve["ci95"])
            steps = np.arange(len(mean))
            ax2.plot(steps, mean, "o-", ms=3, color="C0")
            ax2.fill_between(steps, np.maximum(mean - ci, mean.min() / 3), mean + ci, color="C0", alpha=0.2, lw=0)
            viz.log_y(ax2)
            ax2.set_ylim(*self.YLIM)
            ax2.set_title(f"After meta-training: {entry['shots']}-shot test tasks (n={entry['n_tasks']})",
                          fontsize=10)
            ax2.text(0.97, 0.95, f"after 1 step: {mean[1]:.2f} ± {ci[1]:.2f}\nafter 10 steps: {mean[-1]:.2f} ± "
                     f"{ci[-1]:.2f}", transform=ax2.transAxes, ha="right", va="top", fontsize=8,
                     bbox=dict(fc="white", ec="0.8"))
        elif entry.get("eval_error"):
            ax2.axis("off")
            ax2.text(0.5, 0.6, "Adapting the trained network diverges", ha="center", va="center",
                     transform=ax2.transAxes, color="#b00020", weight="bold", fontsize=10)
            ax2.text(0.5, 0.4, viz._wrap(entry["eval_error"], 52), ha="center", va="center",
                     transform=ax2.transAxes, fontsize=8)
        else:
            ax2.text(0.5, 0.5, "training…", ha="center", va="center", transform=ax2.transAxes, color="0.4")
            ax2.set_title("Adaptation curve (after training)", fontsize=10)
        ax2.set_xlabel("inner gradient steps at test time (α as trained)")
        ax2.set_ylabel("query MSE, mean ± 95% CI")
        ax2.grid(alpha=0.3)
        return fig

    def render(self, algorithm: str, alpha: float, outer_lr: float, inner_steps: int):
        """The precomputed run of one grid point."""
        if self.grid is None:
            raise ConfigError("no precomputed grid: pass grid=load_explorer() to MetaTrainingExplorer")
        try:
            entry = self.grid["index"][algorithm, alpha, outer_lr, inner_steps]
        except KeyError:
            raise ConfigError(f"({algorithm}, α={alpha}, β={outer_lr}, {inner_steps} steps) is not in the "
                              f"precomputed grid {self.grid['grid']}") from None
        return self.render_entry(entry)

    def static(self, dpi: int = 72):
        """Precomputed sliders over the whole grid (no kernel needed)."""
        if self.grid is None:
            raise ConfigError("no precomputed grid: pass grid=load_explorer() to MetaTrainingExplorer")
        g = self.grid["grid"]
        return viz.static_explorer(self.render, g, labels=self.LABELS,
                                   initial={"algorithm": "MAML", "alpha": 0.01, "outer_lr": 0.001, "inner_steps": 1},
                                   title=f"Meta-training on sinusoids ({self.grid['iterations']} iterations per "
                                         f"setting, seed {self.grid['seed']})", dpi=dpi)

    # ---- the live widget -------------------------------------------------------------------------------------
    def live(self, iterations: Sequence[int] = (500, 2000, 5000), redraw_every: float = 1.0):
        """ipywidgets version: choose the settings, press *Train*; the figure redraws about every second."""
        import time

        import ipywidgets as W
        from IPython.display import display

        from .experiments.sinusoid import EXPLORER_GRID

        style = {"description_width": "initial"}
        ctrl = {
            "algorithm": W.Dropdown(options=list(EXPLORER_GRID["algorithm"]), value="MAML", description="algorithm"),
            "alpha": W.SelectionSlider(options=[0.001, 0.003, 0.01, 0.03, 0.1], value=0.01, description="α (inner)",
                                       style=style),
            "outer_lr": W.SelectionSlider(options=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3,
                                          description="β (outer)", style=style),
            "inner_steps": W.SelectionSlider(options=[1, 2, 3, 5], value=1, description="inner steps", style=style),
            "iterations": W.SelectionSlider(options=list(iterations), value=2000 if 2000 in iterations else
                                            iterations[0], description="iterations", style=style),
        }
        button = W.Button(description="Train", button_style="primary", icon="play")
        bar = W.IntProgress(min=0, max=1, value=0, description="", layout=W.Layout(width="40%"))
        status = W.Label("Choose settings and press Train.")
        out = W.Output()
        box = W.VBox([W.HBox([ctrl["algorithm"], ctrl["alpha"], ctrl["outer_lr"]]),
                      W.HBox([ctrl["inner_steps"], ctrl["iterations"], button]), W.HBox([bar, status]), out])

        def show(fig):
            box.figure = fig
            out.clear_output(wait=True)
            with out:
                display(fig)

        def train(_=None):
            settings = {k: c.value for k, c in ctrl.items()}
            total = settings.pop("iterations")
            button.disabled = True
            bar.max, bar.value = total, 0
            start, last = time.perf_counter(), [0.0]

            def on_log(it, metrics, log):
                bar.value = it
                elapsed = time.perf_counter() - start
                status.value = (f"iteration {it}/{total}, {1000 * elapsed / it:.1f} ms per meta-step, "
                                f"loss {metrics['loss']:.3g}")
                if elapsed - last[0] >= redraw_every or it == total:
                    last[0] = elapsed
                    partial = {**settings, "history": log, "error": None}
                    show(self.render_entry(partial, total_iterations=total))

            try:
                entry = self.run(**settings, iterations=total, on_log=on_log)
            finally:
                button.disabled = False
            box.entry = entry
            show(self.render_entry(entry, total_iterations=total))
            status.value = ("meta-training diverged: see the message" if entry["error"] else
                            f"done: {total} iterations in {time.perf_counter() - start:.1f} s "
                            f"({entry['ms_per_step']:.1f} ms per meta-step)"
                            + ("; adapting the result diverges" if entry["eval_error"] else ""))

        button.on_click(train)
        box.controls, box.button, box.train, box.progress, box.status = ctrl, button, train, bar, status
        return box


class TAMLExplorer:
    """TAML-inequality on sinusoids for every inequality measure and λ: adaptation curves and task losses.

    Args:
        grid: the precomputed document of :func:`metalearn_core.experiments.taml.load_explorer`.

    :meth:`static` gives sliders that work without a kernel, :meth:`live` the ipywidgets version; both show
    :meth:`render`. Every point was trained with the same seed, budget and task stream as its λ = 0
    reference (MAML), so the two curves differ only by the TAML term.
    """

    LABELS = {"measure": "inequality measure", "lam": "λ"}
    YLIM = (0.05, 20.0)

    def __init__(self, grid: dict):
        if not isinstance(grid, dict) or "index" not in grid:
            raise ConfigError("TAMLExplorer needs the grid of metalearn_core.experiments.taml.load_explorer()")
        self.grid = grid

    def entry(self, measure: str, lam: float) -> dict:
        try:
            return self.grid["index"][measure, lam]
        except KeyError:
            raise ConfigError(f"({measure}, λ={lam}) is not in the precomputed grid {self.grid['grid']}") from None

    def render(self, measure: str = "theil", lam: float = 0.3):
        """Left: 5-shot adaptation curves of MAML (λ = 0) and TAML with this measure and λ. Right: every test
        task's query MSE before adaptation and after 10 steps, sorted (a flatter line is a more equal one),
        with this measure's value on them."""
        from .inequality import inequality

        entry, base = self.entry(measure, lam), self.entry(measure, 0.0)
        if entry.get("error"):
            return viz.message_figure(entry["error"], title="Meta-training diverges with this setting")
        fig, (ax1, ax2) = viz.new_figure(nrows=2, width=6.0, height=3.3)
        runs = [("MAML (λ = 0)", base, "0.45")] + ([] if lam == 0 else [(f"TAML, {entry['label']}, λ = {lam:g}",
                                                                          entry, "C4")])
        for label, e, col in runs:
            mean, ci = np.array(e["curve"]["mean"]), np.array(e["curve"]["ci95"])
            steps = np.arange(len(mean))
            ax1.plot(steps, mean, "o-", ms=3, color=col, label=label)
            ax1.fill_between(steps, np.maximum(mean - ci, self.YLIM[0]), mean + ci, color=col, alpha=0.2, lw=0)
        viz.log_y(ax1)
        ax1.set_ylim(*self.YLIM)
        ax1.set(xlabel="inner steps at test time (α = 0.01)", ylabel="5-shot query MSE, mean ± 95% CI")
        ax1.set_title(f"Adaptation ({entry['n_tasks']} test tasks)", fontsize=10)
        ax1.grid(alpha=0.3)
        ax1.legend(fontsize=7, loc="lower left")
        text = []
        for label, e, col in runs:
            for step, style in (("0", "--"), ("10", "-")):
                losses = np.sort(np.array(e["task_losses"][step]))
                share = np.arange(1, len(losses) + 1) / len(losses)
                ax2.plot(share, losses, style, color=col, lw=1.4,
                         label=f"{label.split(',')[0]}, {'before' if step == '0' else 'after 10 steps'}")
            value = float(inequality(torch.tensor(e["task_losses"]["0"], dtype=torch.float64), measure))
            text.append(f"{label.split(',')[0]}: {entry['label']} at θ = {value:.3f}")
        viz.log_y(ax2)
        ax2.set_ylim(1e-3, 30)
        ax2.set(xlabel="test tasks, sorted by their loss (fraction)", ylabel="query MSE of each task")
        ax2.set_title("How unequal are the tasks' losses?", fontsize=10)
        ax2.text(0.03, 0.97, "\n".join(text), transform=ax2.transAxes, va="top", fontsize=7,
                 bbox=dict(fc="white", ec="0.8"))
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=6.5, loc="lower right")
        return fig

    def static(self, dpi: int = 72):
        """Precomputed sliders over the whole grid (no kernel needed)."""
        g = self.grid["grid"]
        return viz.static_explorer(self.render, g, labels=self.LABELS, initial={"measure": "theil", "lam": 0.3},
                                   title=f"TAML's inequality term on sinusoids ({self.grid['iterations']} iterations "
                                         f"per run, seed {self.grid['seed']})", dpi=dpi)

    def live(self):
        """ipywidgets sliders over the same grid (instant: every point is precomputed)."""
        return viz.live_explorer(self.render, self.grid["grid"], labels=self.LABELS,
                                 initial={"measure": "theil", "lam": 0.3})


class FineTuneExplorer:
    """Chapter 8: fine-tuning a pre-trained ResNet on 5-way 5-shot digit episodes, over a precomputed grid of
    learning rates and frozen stages; sliders for the learning rate, the number of frozen stages and the number
    of steps, which redraw the query-accuracy curves.

    Args:
        grid: the explorer document of :func:`metalearn_core.experiments.transfer.shipped_explorer` (``points``:
            one curve per learning rate and number of frozen stages).

    :meth:`static` gives sliders that work without a kernel and :meth:`live` the ipywidgets version; both show
    :meth:`render`. To fine-tune a setting that is not in the grid, call
    :func:`metalearn_core.finetune.fine_tune` on an episode (chapter 8 shows how).
    """

    LABELS = {"lr": "learning rate (head ×10)", "freeze_stages": "frozen stages", "steps": "steps"}
    STAGE_NAMES = {0: "none (full fine-tune)", 1: "stem", 2: "stem + layer1", 3: "stem .. layer2",
                   4: "stem .. layer3", 5: "all but the head (linear probe)"}

    def __init__(self, grid: dict):
        if not isinstance(grid, dict) or "points" not in grid:
            raise ConfigError("FineTuneExplorer needs the grid of metalearn_core.experiments.transfer.shipped_explorer()")
        self.grid = grid
        self.index = {(p["lr"], p["freeze_stages"]): p for p in grid["points"]}
        self.lrs = sorted({p["lr"] for p in grid["points"]})
        self.freezes = sorted({p["freeze_stages"] for p in grid["points"]})
        self.steps = list(grid["points"][0]["steps"])

    def point(self, lr: float, freeze_stages: int) -> dict:
        try:
            return self.index[lr, freeze_stages]
        except KeyError:
            raise ConfigError(f"(lr={lr}, freeze_stages={freeze_stages}) is not in the precomputed grid: learning "
                              f"rates {self.lrs}, frozen stages {self.freezes}") from None

    def render(self, lr: float = 1e-3, freeze_stages: int = 4, steps: int = 50):
        """Query accuracy against fine-tuning steps for every number of frozen stages at this learning rate (the
        chosen one bold, with its 95% band), and a marker at ``steps``."""
        if steps not in self.steps:
            raise ConfigError(f"steps={steps} is not a recorded step: choose one of {self.steps}")
        chosen = self.point(lr, freeze_stages)
        fig, ax = viz.new_figure(width=6.2, height=3.8)
        for i, k in enumerate(self.freezes):
            p = self.point(lr, k)
            mean, ci = np.array(p["accuracy"]), np.array(p["ci95"])
            bold = k == freeze_stages
            ax.plot(p["steps"], mean, "o-" if bold else "-", ms=3, lw=2.2 if bold else 1.0, color=f"C{i}",
                    alpha=1.0 if bold else 0.55, label=f"{k}: {self.STAGE_NAMES[k]}")
            if bold:
                ax.fill_between(p["steps"], mean - ci, mean + ci, color=f"C{i}", alpha=0.18, lw=0)
        j = chosen["steps"].index(steps)
        acc, ci = chosen["accuracy"][j], chosen["ci95"][j]
        ax.axvline(steps, color="0.4", ls=":", lw=1)
        ax.annotate(f"{acc:.1f} ± {ci:.1f}%", (steps, acc), textcoords="offset points", xytext=(6, -14), fontsize=8)
        ax.axhline(20, color="0.6", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
        ax.set(xlabel="fine-tuning steps on the 25 support images",
               ylabel="query accuracy (%), mean ± 95% CI")
        ax.set_title(f"Digits 5-way 5-shot, lr = {lr:g} (head {10 * lr:g}), {self.grid['episodes']} episodes",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", title="frozen stages", title_fontsize=7)
        return fig

    def static(self, dpi: int = 72, every: int = 2):
        """Precomputed sliders over the grid (no kernel needed), with every ``every``-th recorded step on the
        steps slider (the page carries one image per combination)."""
        grid = {"lr": self.lrs, "freeze_stages": self.freezes, "steps": self.steps[every::every] or self.steps[1:]}
        return viz.static_explorer(self.render, grid, labels=self.LABELS,
                                   initial={"lr": 1e-3 if 1e-3 in self.lrs else self.lrs[0],
                                            "freeze_stages": self.freezes[0], "steps": self.steps[-1]},
                                   title=f"Fine-tuning the pre-trained ResNet on digit episodes "
                                         f"({self.grid['budget']} budget)", dpi=dpi)

    def live(self):
        """ipywidgets sliders over the same grid (instant: every point is precomputed)."""
        grid = {"lr": self.lrs, "freeze_stages": self.freezes, "steps": self.steps[1:]}
        return viz.live_explorer(self.render, grid, labels=self.LABELS,
                                 initial={"lr": 1e-3 if 1e-3 in self.lrs else self.lrs[0],
                                          "freeze_stages": self.freezes[0], "steps": self.steps[-1]})
