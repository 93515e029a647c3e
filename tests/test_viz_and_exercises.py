"""Plots, widgets (called without a browser), static sliders and exercise checkers."""

import re

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core import demos, viz
from metalearn_core.exercises import Feedback, check, compare_numbers, list_exercises


def _render(a, b):
    if a > 2:
        raise ml.DivergenceError(f"α={a} diverges")
    fig, ax = viz.new_figure()
    ax.plot([0, 1], [a, b])
    return fig


def test_static_explorer_has_one_frame_per_grid_point_and_the_classes_the_site_uses():
    out = viz.static_explorer(_render, {"a": [1, 2, 3], "b": [0.5, 1.5]}, labels={"a": "α"}, progress=False)
    html = out.data
    assert html.count('class="ml-static-slider"') == 2
    assert 'class="ml-static-explorer"' in html and 'class="ml-static-frame"' in html
    frames = re.search(r"var frames=(\{.*?\});", html).group(1)
    assert frames.count("data:image/png;base64,") == 6
    assert '"2,1"' in frames and ">α " in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_static_explorer_rejects_bad_grids():
    with pytest.raises(ml.ConfigError):
        viz.static_explorer(_render, {}, progress=False)
    with pytest.raises(ml.ConfigError):
        viz.static_explorer(_render, {"a": [1], "b": []}, progress=False)
    with pytest.raises(ml.ConfigError):
        viz.static_explorer(_render, {"a": [1], "b": [1]}, initial={"a": 7}, progress=False)


def test_live_explorer_redraws_on_slider_change_and_shows_errors_as_messages(monkeypatch):
    calls = []
    box = viz.live_explorer(lambda a, b: calls.append((a, b)) or _render(a, b), {"a": [1, 3], "b": [0, 1]})
    assert calls == [(1, 0)]
    box.sliders["b"].value = 1          # what a user's drag does
    assert calls[-1] == (1, 1)
    box.sliders["a"].value = 3          # diverging setting: a message figure, no exception
    assert calls[-1] == (3, 1)
    texts = " ".join(t.get_text() for ax in box.figure.axes for t in ax.texts)
    assert "diverges" in texts   # the figure on show is the message, not a broken plot


def test_message_figure_for_divergence():
    fig = viz._render_safely(_render, {"a": 5, "b": 0})
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "diverges" in texts


def test_plots_draw_curves_with_ci_bands():
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    c = ml.adaptation_curve(learner, learner.model.init(), ml.QuadraticTasks(), steps=3, n_tasks=20)
    fig = viz.plot_adaptation_curves([c], reference={"MAML": {1: 0.5}})
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 1
    res = ml.meta_train(learner, ml.QuadraticTasks(), iterations=10, log_every=2, progress=False)
    fig = viz.plot_learning_curves({"MAML": res.history})
    assert len(fig.axes[0].lines[0].get_xdata()) == 5
    fig = viz.plot_sinusoid_tasks(ml.SinusoidTasks().sample(3))
    assert len(fig.axes[0].lines) == 9


def test_toy_comparison_is_consistent_and_cached():
    comp = demos.toy_comparison(0.1, 0.05, 1, budget="quick")
    assert set(comp.trajectories) == {"MAML", "FOMAML", "Reptile", "JointTraining"}
    n = ml.preset("toy_explorer", "quick").iterations // ml.preset("toy_explorer", "quick").log_every + 1
    assert all(t.shape == (n, 2) for t in comp.trajectories.values())
    assert np.allclose(comp.trajectories["MAML"][0], demos.TOY_START)
    assert demos.toy_comparison(0.1, 0.05, 1, budget="quick") is comp
    for curve in comp.curves.values():
        assert curve.mean[-1] < curve.mean[0]


def test_toy_objective_grid_matches_the_adaptation_losses():
    family = ml.QuadraticTasks()
    t1, t2, j = demos.toy_objective_grid(family, 0.1, 2, n=7, n_tasks=300)
    batch = family.sample(300, seed=demos.REFERENCE_SEED, dtype=torch.float64)
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    theta = torch.tensor([t1[2, 5], t2[2, 5]], dtype=torch.float64)
    direct = ml.adaptation_losses(learner, {"w": theta}, batch, 2)[:, 2].mean().item()
    assert j[2, 5] == pytest.approx(direct, rel=1e-9)


def test_marked_maml_optimum_is_the_minimum_of_the_drawn_contours():
    family = ml.QuadraticTasks()
    comp = demos.toy_comparison(0.1, 0.05, 1, budget="quick")
    t1, t2, j = demos.toy_objective_grid(family, 0.1, 1, lim=(-2.5, 4.5), n=201)
    i = np.unravel_index(np.argmin(j), j.shape)
    assert abs(t1[i] - comp.maml_optimum[0]) <= 0.05 and abs(t2[i] - comp.maml_optimum[1]) <= 0.05


def test_toy_figure_renders_and_diverging_settings_raise_clear_errors():
    fig = demos.toy_figure(0.1, 0.05, 1, budget="quick")
    assert len(fig.axes) == 2
    with pytest.raises(ml.DivergenceError):
        demos.toy_figure(0.9, 0.05, 5, budget="quick")


def test_compare_numbers_explains_mistakes_without_revealing_the_answer():
    ok, msg = compare_numbers(1.28, 1.28)
    assert ok
    ok, msg = compare_numbers(-1.28, 1.28)
    assert not ok and "sign" in msg and "1.28" not in msg
    ok, msg = compare_numbers([1, 2, 3], [1, 2])
    assert not ok and "shape" in msg
    ok, msg = compare_numbers(12.8, 1.28)
    assert not ok and "factor" in msg
    ok, msg = compare_numbers(1.6, 1.28, hints={"that is the first-order value": 1.6})
    assert not ok and msg == "that is the first-order value"
    ok, msg = compare_numbers("one", 1.0)
    assert not ok


def test_every_exercise_has_a_checker_that_rejects_a_missing_answer():
    exercises = list_exercises()
    assert exercises, "no exercise checkers registered"
    for ex_id in exercises:
        fb = check(ex_id, ...)
        assert isinstance(fb, Feedback) and not fb and "no answer" in fb.message
        assert "<div" in fb._repr_html_()


def test_unknown_exercise():
    with pytest.raises(ml.ConfigError):
        check("99.9", 1)


def test_compare_choice_reads_letters_and_explains_each_wrong_option():
    from metalearn_core.exercises import compare_choice

    options = {"a": "one", "b": "two", "c": "three"}
    why = {"a": "a is wrong because", "c": "c is wrong because"}
    for good in ("b", "B", "(b)", "b)", "option b", " answer: b. "):
        assert compare_choice(good, options, "b", "right", why) == (True, "right"), good
    assert compare_choice("c", options, "b", "right", why) == (False, "not (c): c is wrong because")
    ok, msg = compare_choice(2, options, "b", "right", why)
    assert not ok and "a, b or c" in msg and "not int" in msg
    ok, msg = compare_choice("bc", options, "b", "right", why)
    assert not ok and "single letter" in msg
    ok, msg = compare_choice("d", options, "b", "right", why)
    assert not ok and "no option (d)" in msg


def test_html_table_caption_sits_above_the_scrolled_box_so_it_wraps_with_the_page():
    html = viz.html_table(["a", "b"], [[1, 2]], caption="a long caption & more", notes=["a note"]).data
    assert "<caption" not in html
    cap, box, table, note = (html.index(s) for s in ("a long caption &amp; more", "overflow-x:auto", "<table",
                                                     "a note"))
    assert cap < box < table < note


def test_text_table_aligns_labels_left_and_numbers_right():
    from metalearn_core.results import text_table

    out = text_table(["name", "x"], [["a", "1.5"], ["long name", "10.25"]]).splitlines()
    assert out[0] == "name           x" and out[1] == "-" * 16
    assert out[2] == "a            1.5" and out[3] == "long name  10.25"
    assert text_table(["n", "x"], [["a", "1"]], align_left=2).splitlines()[2] == "a  1"
