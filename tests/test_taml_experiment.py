"""Chapter 6's experiment: the runs, a quick reproduction end to end (checkpoints, rows, paired differences,
the λ × measure grid), the command line, the widget, the plots, the exercises and the shipped results."""

import json

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core import cli, viz
from metalearn_core.exercises import check
from metalearn_core.experiments import get_experiment, taml
from metalearn_core.results import read_results, validate_row
from metalearn_core.widgets import TAMLExplorer


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The whole reproduction at the quick budget, into a temporary results folder."""
    root = tmp_path_factory.mktemp("taml-results")
    paths = taml.reproduce("quick", 0, root, progress=False, log=lambda *_: None)
    return root, paths


# ---- the runs ----------------------------------------------------------------------------------------------------

def test_runs_compare_against_maml_in_both_domains():
    assert get_experiment("taml") is taml
    for runs in (taml.SINUSOID_RUNS, taml.OMNIGLOT_RUNS):
        assert runs[0].algorithm == "maml"
        assert len({s.slug for s in runs}) == len(runs)
    learners = {s.slug: s.learner("quick") for s in taml.RUNS}
    assert isinstance(learners["omniglot-taml-entropy"], ml.TAMLEntropy)
    assert isinstance(learners["sinusoid-taml-theil"], ml.TAMLInequality)
    assert learners["sinusoid-taml-theil"].lam == taml.LAMBDA
    assert isinstance(learners["omniglot-meta-sgd"], ml.MetaSGD)
    assert isinstance(learners["sinusoid-learned-update"], ml.LearnedUpdate)
    # the same α and steps for every method of a domain
    for domain in ("sinusoid", "omniglot"):
        assert len({(learners[s.slug].alpha, learners[s.slug].inner_steps) for s in taml.RUNS
                    if s.domain == domain}) == 1


def test_unknown_run_lists_the_runs():
    with pytest.raises(ml.ConfigError, match="sinusoid-maml"):
        taml.load_models(["sinusoid-taml-gini"])


# ---- a quick reproduction -----------------------------------------------------------------------------------------

def test_reproduce_writes_rows_checkpoints_and_the_grid(quick_run):
    root, paths = quick_run
    rows = read_results(taml.results_path(root))
    for r in rows:
        validate_row(r)
    assert {r["run"] for r in rows} == {s.slug for s in taml.RUNS}
    assert {r["setting"] for r in rows} == set(taml.SINUSOID_SETTINGS) | {taml.OMNIGLOT_SETTING}
    sin = [r for r in rows if r["domain"] == "sinusoid"]
    assert {r["steps"] for r in sin} == set(range(11)) and {r["metric"] for r in sin} == {"mse"}
    omni = [r for r in rows if r["domain"] == "omniglot"]
    assert {r["steps"] for r in omni} == {0, 1, 2, 3} and all(0 <= r["mean"] <= 100 for r in omni)
    # Omniglot is tested inside the one-shot runs: ten alphabets, intervals over them
    assert all(r["test_alphabets"] == 10 and r["ci_over"] == "alphabets" and len(r["per_alphabet"]) == 10
               for r in omni)
    for r in omni:
        assert r["mean"] == pytest.approx(np.mean(list(r["per_alphabet"].values())), abs=0.01)
    assert all(r["budget"] == "quick" and r["n_tasks"] + r["diverged_tasks"] == 50 for r in sin)
    # a task is left out only from the step at which it diverged on: step 0 always has every task
    assert all(r["diverged_tasks"] == 0 for r in rows if r["steps"] == 0)
    # every method but MAML carries its paired difference to MAML; MAML's own rows do not
    for r in rows:
        assert ("vs_maml" in r) == (not r["run"].endswith("-maml")), r["run"]
    for s in taml.RUNS:
        assert taml.checkpoint_path(s.slug, "quick", 0, root).is_file()
    grid = taml.load_explorer(root)
    assert len(grid["points"]) == len(grid["grid"]["measure"]) * len(grid["grid"]["lam"])
    assert set(grid["index"]) == {(m, lam) for m in grid["grid"]["measure"] for lam in grid["grid"]["lam"]}


def test_paired_differences_are_the_mean_of_per_task_differences(quick_run):
    root, _ = quick_run
    models = taml.load_models(["sinusoid-maml", "sinusoid-meta-sgd"], budget="quick", root=root)
    rows, curves = taml.evaluate_models(models, n_tasks=30, test_seed=5)
    [row] = [r for r in rows if r["run"] == "sinusoid-meta-sgd" and r["setting"] == "sinusoid 5-shot"
             and r["steps"] == 1]
    a, b = curves["sinusoid 5-shot", "sinusoid-meta-sgd"], curves["sinusoid 5-shot", "sinusoid-maml"]
    both = a.kept[:, 1] & b.kept[:, 1]
    mean, ci = ml.mean_ci95(a.losses[both, 1] - b.losses[both, 1])
    assert row["paired_tasks"] == both.sum()
    assert row["vs_maml"] == pytest.approx(mean, abs=1e-5) and row["vs_maml_ci95"] == pytest.approx(ci, abs=1e-5)


def test_evaluate_reproduces_the_rows_of_the_same_test_seed(quick_run):
    root, _ = quick_run
    shipped = {(r["run"], r["setting"], r["steps"]): r["mean"] for r in read_results(taml.results_path(root))}
    again = taml.evaluate(0, None, budget="quick", root=root, log=lambda *_: None)
    for r in again:
        assert r["mean"] == pytest.approx(shipped[r["run"], r["setting"], r["steps"]], abs=1e-4)


def test_checkpoint_of_another_run_is_refused(quick_run, tmp_path):
    root, _ = quick_run
    folder = tmp_path / "checkpoints" / "taml"
    folder.mkdir(parents=True)
    maml = taml.checkpoint_path("sinusoid-maml", "quick", 0, root)
    # a MAML checkpoint under the TAML run's name: same network, other run
    (folder / taml.checkpoint_path("sinusoid-taml-theil", "quick", 0, root).name).write_bytes(maml.read_bytes())
    with pytest.raises(ml.CheckpointError, match="holds sinusoid-maml"):
        taml.load_models(["sinusoid-taml-theil"], budget="quick", root=tmp_path)
    # a MAML checkpoint under Meta-SGD's name: the learned rates are missing
    (folder / taml.checkpoint_path("sinusoid-meta-sgd", "quick", 0, root).name).write_bytes(maml.read_bytes())
    with pytest.raises(ml.CheckpointError, match="Meta-SGD learning rates"):
        taml.load_models(["sinusoid-meta-sgd"], budget="quick", root=tmp_path)


def test_tables_show_both_domains_and_the_published_numbers(quick_run):
    root, _ = quick_run
    rows = read_results(taml.results_path(root))
    text = taml.table(rows)
    assert "sinusoid 5-shot" in text and taml.OMNIGLOT_SETTING in text and "[0.67]" in text and "[98.7]" in text
    html = taml.html_table(rows, "omniglot").data
    assert "TAML (entropy)" in html and "Meta-SGD" in html
    with pytest.raises(ml.ConfigError, match="domain"):
        taml.html_table(rows, "cifar")


# ---- the command line ----------------------------------------------------------------------------------------------

def test_cli_evaluate_and_missing_checkpoint(quick_run, capsys, tmp_path):
    root, _ = quick_run
    assert cli.main(["evaluate", "taml", "--budget", "quick", "--tasks", "10", "--seed", "2",
                     "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "test seed 2" in out and "TAML (Theil)" in out and "learned update" in out
    assert cli.main(["evaluate", "taml", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no sinusoid MAML checkpoint") and "reproduce taml" in err
    assert cli.main(["list"]) == 0 and "taml" in capsys.readouterr().out


# ---- widget and plots -------------------------------------------------------------------------------------------

def test_explorer_renders_every_point_live_and_static(quick_run):
    root, _ = quick_run
    ex = TAMLExplorer(taml.load_explorer(root))
    fig = ex.render("gini", 0.3)
    assert len(fig.axes) == 2 and "Gini" in fig.axes[1].texts[0].get_text()
    assert ex.render("varlog", 0.0) is not None                    # λ = 0: MAML alone
    box = ex.live()
    box.sliders["measure"].value = "atkinson"
    box.sliders["lam"].value = 3.0
    assert "λ = 3" in "".join(t.get_text() for t in box.figure.axes[0].get_legend().get_texts())
    html = ex.static(dpi=30).data
    assert html.count("data:image/png") >= len(ex.grid["points"])
    with pytest.raises(ml.ConfigError, match="not in the precomputed grid"):
        ex.render("theil", 0.5)
    with pytest.raises(ml.ConfigError, match="load_explorer"):
        TAMLExplorer({"points": []})


def test_diverged_explorer_point_shows_a_message():
    entry = {"measure": "theil", "lam": 3.0, "label": "Theil", "error": "meta-training diverged at iteration 3"}
    grid = {"grid": {"measure": ["theil"], "lam": [0.0, 3.0]}, "index": {("theil", 0.0): entry, ("theil", 3.0): entry}}
    fig = TAMLExplorer(grid).render("theil", 3.0)
    assert "diverged" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_learned_rates_and_update_rule_plots(quick_run):
    root, _ = quick_run
    models = taml.load_models(["sinusoid-meta-sgd", "sinusoid-learned-update"], budget="quick", root=root)
    m = models["sinusoid-meta-sgd"]
    fig = viz.plot_learned_rates(m.learner.rates(m.params), 0.01)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(m.learner.model.network_names())
    u = models["sinusoid-learned-update"]
    fig = viz.plot_update_rule(u.learner, u.params)
    assert len(fig.axes[0].lines) == 4
    # an untrained rule is gradient descent: every line lies on the slope −α
    fresh = ml.LearnedUpdate(ml.MLP((1, 10, 1)), alpha=0.01)
    fig = viz.plot_update_rule(fresh, fresh.model.init(0))
    for line in fig.axes[0].lines[:3]:
        x, y = line.get_data()
        np.testing.assert_allclose(y, -0.01 * x, atol=1e-9)


# ---- exercises ---------------------------------------------------------------------------------------------------

def test_exercise_6_1_theil():
    assert check("6.1", np.log(2) / 3)
    assert "mean" in check("6.1", np.log(2)).message
    assert "natural logarithm" in check("6.1", np.log10(2) / 3).message
    assert "Gini" in check("6.1", 1 / 3).message          # Σ|ℓi − ℓj| / (2M²μ) = 12 / 36
    assert check("6.1", float(ml.inequality.inequality(torch.tensor([1.0, 1.0, 4.0]), "theil")))


def test_exercise_6_2_entropy():
    before = np.log(5)
    after = -(0.9 * np.log(0.9) + 4 * 0.025 * np.log(0.025))
    assert check("6.2", after - before)
    assert "sign" in check("6.2", before - after).message
    assert "log₂" in check("6.2", (after - before) / np.log(2)).message
    assert "four classes" in check("6.2", -before - 0.9 * np.log(0.9)).message


def test_exercise_6_3_meta_sgd_step():
    assert check("6.3", [0.8, -2.5])
    assert "against" in check("6.3", [1.2, -1.5]).message
    assert "element by element" in check("6.3", [0.3, -2.7]).message
    assert "own rate" in check("6.3", [0.0, -2.1]).message
    # the package's Meta-SGD step agrees: one example x = (2, 1), y = −0.5 gives the gradient 2(xᵀθ − y)x = (2, 1)
    learner = ml.MetaSGD(ml.LinearModel(2), alpha=0.1)
    params = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64), "lr.w": torch.tensor([0.1, 0.5], dtype=torch.float64)}
    x, y = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.tensor([[-0.5]], dtype=torch.float64)
    assert check("6.3", learner.adapt(params, x, y, steps=1)["w"].tolist())


# ---- the shipped results ---------------------------------------------------------------------------------------

def test_shipped_results_are_complete_and_cpu_budget():
    rows = taml.shipped_rows("cpu", 0)
    assert {r["run"] for r in rows} == {s.slug for s in taml.RUNS}
    for r in rows:
        validate_row(r)
        assert r["n_tasks"] + r.get("diverged_tasks", 0) == 600
    iterations = {r["run"]: r["iterations"] for r in rows}
    assert iterations["sinusoid-maml"] == ml.preset("taml_sinusoid", "cpu").iterations
    assert iterations["omniglot-maml"] == ml.preset("taml_omniglot", "cpu").iterations
    grid = json.loads(taml.explorer_path().read_text())
    assert grid["budget"] == "cpu" and grid["iterations"] == ml.preset("taml_explorer", "cpu").iterations


def test_shipped_checkpoints_load():
    models = taml.load_models()
    assert set(models) == {s.slug for s in taml.RUNS}
    rates = models["omniglot-meta-sgd"].learner.rates(models["omniglot-meta-sgd"].params)
    assert set(rates) == set(models["omniglot-meta-sgd"].learner.model.network_names())
