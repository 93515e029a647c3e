"""The chapter-4 widgets, driven without a browser: render functions, buttons, callbacks, static frames."""

import re

import pytest
import torch
from matplotlib.figure import Figure

import metalearn_core as ml
from metalearn_core import viz
from metalearn_core.widgets import AdaptationExplorer, MetaTrainingExplorer


@pytest.fixture(scope="module")
def explorer():
    model = ml.MLP((1, 16, 16, 1))
    maml = ml.MAML(model, alpha=0.01)
    pre = ml.JointTraining(model, alpha=0.01)
    return AdaptationExplorer({"MAML": (maml, model.init(0)), "pre-trained": (pre, model.init(1))}, n_tasks=20)


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_adaptation_render_draws_fits_and_curves(explorer):
    fig = explorer.render(alpha=0.01, steps=5, shots=10, task=0)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    # true function, support points, one fit per model; a task curve and a mean curve per model
    assert len(left.lines) == 4 and len(right.lines) == 2 * 2 + 1
    assert "after 5 steps" in left.get_title() or "5 steps" in left.get_title()


def test_adaptation_tasks_are_fixed_per_index_and_differ_between_indices(explorer):
    a, b, c = explorer.task(0, 5), explorer.task(0, 5), explorer.task(1, 5)
    assert torch.equal(a.x_support, b.x_support)
    assert not torch.equal(a.x_support, c.x_support)


def test_diverging_alpha_shows_a_message_not_nan(explorer):
    fig = viz._render_safely(explorer.render, {"alpha": 50.0, "steps": 10, "shots": 10, "task": 0})
    assert "diverge" in _texts(fig)


def test_live_adaptation_widget_new_task_button_moves_to_another_task(explorer):
    box = explorer.live()
    first = box.figure
    box.buttons["New task"].click()
    assert box.sliders["task"].value == 1
    assert box.figure is not first
    box.sliders["alpha"].value = 0.3
    assert box.figure is not None


def test_static_adaptation_widget_has_one_frame_per_setting(explorer):
    html = explorer.static(alphas=(0.01, 0.1), steps=(0, 1), shots=(5,), tasks=2).data
    frames = re.search(r"var frames=(\{.*?\});", html).group(1)
    assert frames.count("data:image/png;base64,") == 2 * 2 * 1 * 2
    assert html.count('class="ml-static-slider"') == 4


def test_meta_training_run_reports_progress_through_the_callback():
    seen = []
    entry = MetaTrainingExplorer().run("FOMAML", 0.01, 1e-3, 1, iterations=40, budget="quick",
                                       on_log=lambda it, m, log: seen.append((it, len(log["loss"]))))
    assert entry["error"] is None and entry["iterations"] == 40
    assert [it for it, _ in seen] == list(range(5, 41, 5))
    assert len(entry["curve"]["mean"]) == 11
    fig = MetaTrainingExplorer().render_entry(entry)
    assert len(fig.axes) == 2


def test_meta_training_divergence_becomes_a_message():
    entry = MetaTrainingExplorer().run("MAML", 20.0, 1e-3, 5, iterations=20, budget="quick")
    assert entry["error"] and "α" in entry["error"]
    fig = MetaTrainingExplorer().render_entry(entry)
    assert "diverges" in _texts(fig)


def test_live_meta_training_widget_trains_and_draws_without_a_browser():
    box = MetaTrainingExplorer().live(iterations=(20, 40))
    box.controls["algorithm"].value = "Reptile"
    box.controls["iterations"].value = 20
    box.train()
    assert box.progress.value == 20 and box.progress.max == 20
    assert "done: 20 iterations" in box.status.value
    assert box.entry["algorithm"] == "Reptile" and not box.button.disabled
    assert isinstance(box.figure, Figure)


def test_static_meta_training_widget_needs_a_grid():
    with pytest.raises(ml.ConfigError, match="load_explorer"):
        MetaTrainingExplorer().static()


def test_a_run_that_trains_but_diverges_at_test_time_keeps_its_learning_curve(monkeypatch):
    from metalearn_core.experiments import sinusoid

    def diverging_curve(*args, **kwargs):
        raise ml.DivergenceError("adaptation diverged: with α=0.1 the query loss became NaN/inf")

    monkeypatch.setattr(sinusoid, "adaptation_curve", diverging_curve)
    entry = MetaTrainingExplorer().run("MAML", 0.01, 1e-3, 1, iterations=10, budget="quick")
    assert entry["error"] is None and entry["curve"] is None and "NaN/inf" in entry["eval_error"]
    assert entry["history"]["iterations"] == [5, 10]
    fig = MetaTrainingExplorer().render_entry(entry)
    assert len(fig.axes[0].lines) == 2 and "Adapting the trained network diverges" in _texts(fig)
