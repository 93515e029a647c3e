"""The Omniglot experiment of chapter 7: runs, training through the one loop, evaluation rows, the one-shot runs,
the command line, checkpoints, pictures, exercises and the shipped results."""

import math
import shutil

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core import cli, viz
from metalearn_core.exercises import check
from metalearn_core.experiments import get_experiment, omniglot
from metalearn_core.results import read_results, validate_row


@pytest.fixture(scope="module")
def images():
    return ml.load_omniglot()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two networks trained at the quick budget: MAML 5-way (second order) and ProtoNet (any N)."""
    root = tmp_path_factory.mktemp("omniglot-results")
    models = omniglot.train(["MAML 5-way", "ProtoNet"], budget="quick", root=root, progress=False,
                            log=lambda *_: None)
    return root, models


# ---- the runs -----------------------------------------------------------------------------------------------

def test_runs_cover_every_method_and_setting():
    assert {s.method for s in omniglot.RUNS} == set(omniglot.METHODS)
    for method in omniglot.METHODS:
        covered = {x for s in omniglot.RUNS if s.method == method for x in s.settings}
        assert covered == set(omniglot.SETTINGS), method
    assert len({s.slug for s in omniglot.RUNS}) == len(omniglot.RUNS)


def test_budget_caps_inner_steps_of_maml_but_never_reptile():
    by = {s.name: s for s in omniglot.RUNS}
    assert by["MAML 20-way"].train_steps("full") == 5        # the paper's
    assert by["MAML 20-way"].train_steps("cpu") == 1         # what the cpu budget affords
    assert by["FOMAML 20-way"].train_steps("cpu") == 1
    assert by["Reptile 20-way"].train_steps("cpu") == 5      # one step would be joint training
    assert by["MAML 5-way"].learner("cpu").inner_steps == 1
    assert by["MAML 5-way"].model("cpu").width == ml.preset("omniglot", "cpu").width


def test_learners_classify_only_the_ways_they_can():
    by = {s.name: s for s in omniglot.RUNS}
    with pytest.raises(ml.ConfigError, match="5-way head"):
        by["MAML 5-way"].learner("quick", ways=20)
    proto = by["ProtoNet"]
    assert proto.learner("quick", ways=5).ways == 5 and proto.learner("quick").ways == 20


def test_unknown_run_names_list_the_runs():
    with pytest.raises(ml.ConfigError, match="MAML 5-way"):
        omniglot.checkpoint_path("MAML 10-way")
    with pytest.raises(ml.ConfigError, match="ProtoNet"):
        omniglot.train(["Siamese"], budget="quick", save=False)
    assert [s.name for s in omniglot._specs(["maml"])] == ["MAML 5-way", "MAML 20-way"]


# ---- training and evaluation end to end (quick budget) ------------------------------------------------------

def test_training_records_history_validation_and_checkpoint(trained):
    root, models = trained
    cfg = ml.preset("omniglot", "quick")
    m = models["MAML 5-way"]
    assert m.history.steps_done == cfg.iterations
    val = m.validation
    assert val["iterations"][-1] == cfg.iterations and len(val["iterations"]) >= 2
    assert all(0 <= a <= 100 for a in val["accuracy"])
    assert m.path == omniglot.checkpoint_path("MAML 5-way", "quick", 0, root) and m.path.is_file()
    assert m.path.stat().st_size < 3_000_000
    loaded = omniglot.load_models(["MAML 5-way", "ProtoNet"], budget="quick", root=root)
    for name, lm in loaded.items():
        for k, v in models[name].params.items():
            assert torch.equal(v, lm.params[k])
        assert lm.validation == models[name].validation


def test_reuse_loads_instead_of_training(trained):
    root, models = trained
    again = omniglot.train(["ProtoNet"], budget="quick", root=root, reuse=True, progress=False, log=lambda *_: None)
    assert torch.equal(again["ProtoNet"].params["blocks.0.conv.weight"],
                       models["ProtoNet"].params["blocks.0.conv.weight"])


def test_evaluation_rows_follow_the_schema_and_settings(trained, images):
    _, models = trained
    rows, curves = omniglot.evaluate_models(models, images=images, n_tasks=6, progress=False)
    for r in rows:
        validate_row(r)
        assert r["metric"] == "accuracy" and 0 <= r["mean"] <= 100 and r["n_tasks"] == 6
    maml = [r for r in rows if r["algorithm"] == "MAML" and r["setting"] == "5-way 1-shot"]
    assert [r["steps"] for r in maml] == [0, 1, 2, 3]                      # 0..test steps
    assert [r["published"] for r in maml] == [None, None, None, 98.7]     # published beside the final step
    settings = {r["setting"] for r in rows}
    assert {"5-way 1-shot", "5-way 5-shot", "20-way 1-shot", "5-way 1-shot, non-transductive"} <= settings
    assert not any(r["algorithm"] == "MAML" and r["setting"] == "20-way 1-shot" for r in rows)
    proto = [r for r in rows if r["algorithm"] == "ProtoNet"]
    assert {r["steps"] for r in proto} == {0}
    # accuracy rows are percentages of the curve's fractions
    curve = curves["5-way 1-shot", "MAML 5-way"]
    assert maml[-1]["mean"] == pytest.approx(100 * curve.mean[-1], abs=1e-3)
    text = omniglot.table(rows)
    assert "[98.7]" in text and "ProtoNet" in text
    assert "non-transductive" in omniglot.html_table(rows).data


def test_same_episodes_for_every_method(trained, images):
    _, models = trained
    _, curves = omniglot.evaluate_models(models, images=images, n_tasks=4, settings=["5-way 1-shot"],
                                         non_transductive=False, progress=False)
    fam = ml.OmniglotTasks(images, "test", ways=5)
    # re-sampling the test stream gives the episodes both networks were scored on
    a = fam.sample(4, shots=1, queries=omniglot.EVAL_QUERIES, generator=ml.make_generator(
        ml.evaluation.TEST_SEED_OFFSET))
    b = fam.sample(4, shots=1, queries=omniglot.EVAL_QUERIES, generator=ml.make_generator(
        ml.evaluation.TEST_SEED_OFFSET))
    assert torch.equal(a.x_query, b.x_query)
    assert set(curves) == {("5-way 1-shot", "MAML 5-way"), ("5-way 1-shot", "ProtoNet")}


def test_predict_episode_and_gallery_pictures(trained, images):
    _, models = trained
    fam = ml.OmniglotTasks(images, "test", ways=5)
    batch = fam.sample(2, shots=1, queries=3, seed=0)
    for m in models.values():
        pred = omniglot.predict_episode(m, batch, 1)
        assert pred.shape == (15,) and pred.dtype == torch.long and int(pred.max()) < 5
    fig = viz.plot_episode(batch, 1, predictions=pred)
    assert len(fig.axes) == 5 * 4
    ex = [{"query": batch.x_query[0, 0], "true_support": batch.x_support[0, 0],
           "predicted_support": batch.x_support[0, 1], "label": "x"}]
    assert len(viz.plot_misclassified(ex * 3, columns=2).axes) == 12
    assert "Nothing to show" in viz.plot_misclassified([]).axes[0].texts[0].get_text()
    assert len(viz.plot_characters(images, [0, 5], drawers=4).axes) == 8


def test_misclassified_collects_exactly_the_wrong_queries(trained, images):
    _, models = trained
    m = models["MAML 5-way"]                      # quick budget: plenty of mistakes
    batch = ml.OmniglotTasks(images, "test", ways=5).sample(3, shots=1, queries=4, seed=1)
    wrong = [(b, q) for b in range(3)
             for q in (omniglot.predict_episode(m, batch, b) != batch.y_query[b]).nonzero().flatten().tolist()]
    found = omniglot.misclassified(m, batch, limit=100)
    assert [(e["episode"], e["query_index"]) for e in found] == wrong
    for e in found:
        b = e["episode"]
        assert e["true"] != e["predicted"] and e["true"] == int(batch.y_query[b, e["query_index"]])
        assert torch.equal(e["query"], batch.x_query[b, e["query_index"]])
        assert torch.equal(e["true_support"], batch.x_support[b, e["true"]])          # 1 shot: support j = class j
        assert torch.equal(e["predicted_support"], batch.x_support[b, e["predicted"]])
    if len(wrong) > 1:
        assert len(omniglot.misclassified(m, batch, limit=1)) == 1
    with pytest.raises(ml.ConfigError, match="limit must be a positive integer"):
        omniglot.misclassified(m, batch, limit=0)


def test_oneshot_rows_score_both_protocols_and_the_pixel_baseline(trained):
    _, models = trained
    runs = ml.load_oneshot_runs()
    rows, scores = omniglot.oneshot_rows(models, runs=runs)
    for r in rows:
        validate_row(r)
        assert r["metric"] == "error" and 0 <= r["mean"] <= 100 and r["n_tasks"] == 20
        assert len(r["run_errors"]) == 20
    names = {(r["algorithm"], r["setting"]) for r in rows}
    assert ("ProtoNet", "20 runs, non-transductive") in names and ("ProtoNet", "20 runs, transductive") in names
    assert not any(r["algorithm"] == "MAML" for r in rows)            # only 20-way networks take the runs
    pixels = [r for r in rows if r["algorithm"].startswith("nearest")][0]
    assert pixels["mean"] == pytest.approx(79.0, abs=0.05)
    # the row's mean is the mean of the per-run errors, in percent
    assert np.mean(pixels["run_errors"]) == pytest.approx(pixels["mean"], abs=0.01)
    assert "people" in omniglot.oneshot_table(rows) and "38.8" in omniglot.oneshot_table(rows)
    head, lines = omniglot._oneshot_cells(rows)
    assert head[1] == "error (%)"                  # the numbers come right after the name, visible on a phone
    assert lines[0][1].startswith(f"{min(r['mean'] for r in rows):.1f} ±")    # ours, best first
    assert lines[-1] == ["Hausdorff distance", "38.8", "Lake et al. 2015"]
    fig = viz.plot_oneshot_run(runs[0], scores["ProtoNet", False].predictions[0], items=(0, 1))
    assert len(fig.axes) == 10 * 4


# ---- checkpoints and the command line -----------------------------------------------------------------------

def test_missing_and_foreign_checkpoints_say_what_to_do(trained, tmp_path):
    root, _ = trained
    with pytest.raises(ml.CheckpointError, match="reproduce omniglot --budget quick --seed 3"):
        omniglot.load_models(["MAML 5-way"], budget="quick", seed=3, root=root)
    foreign = tmp_path / "checkpoints" / "omniglot"
    foreign.mkdir(parents=True)
    # a ProtoNet checkpoint (no head) where MAML 5-way's should be
    shutil.copy(omniglot.checkpoint_path("ProtoNet", "quick", 0, root),
                foreign / omniglot.checkpoint_path("MAML 5-way", "quick", 0, root).name)
    with pytest.raises(ml.CheckpointError):
        omniglot.load_models(["MAML 5-way"], budget="quick", root=tmp_path)


def test_command_line_knows_omniglot_and_oneshot(trained, capsys):
    root, _ = trained
    assert get_experiment("omniglot") is omniglot
    assert get_experiment("oneshot").reproduce is omniglot.reproduce_oneshot
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "omniglot" in listed and "oneshot" in listed
    assert cli.main(["evaluate", "omniglot", "--budget", "quick", "--seed", "1", "--results", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no") and "reproduce omniglot" in err and "Traceback" not in err


def test_evaluate_oneshot_of_shipped_style_checkpoints(trained, tmp_path, capsys):
    root, models = trained
    # a folder holding only the ProtoNet checkpoint: evaluating the one-shot runs needs every 20-way network
    with pytest.raises(ml.CheckpointError, match="MAML 20-way"):
        omniglot.evaluate_oneshot(budget="quick", root=root, log=lambda *_: None)
    rows, _ = omniglot.oneshot_rows({"ProtoNet": models["ProtoNet"]})
    assert rows[0]["algorithm"].startswith("nearest")


# ---- exercises ----------------------------------------------------------------------------------------------

def test_exercise_7_1_prototype_logits():
    from metalearn_core.exercises.ch07 import EX_7_1

    sup = EX_7_1["support"]
    emb = torch.tensor([p for c in sorted(sup) for p in sup[c]], dtype=torch.float64)
    labels = torch.tensor([c for c in sorted(sup) for _ in sup[c]])
    learner = ml.ProtoNet(ml.Conv4(ways=None, width=4), ways=3)
    logits = learner.logits(torch.tensor([EX_7_1["query"]], dtype=torch.float64), learner.prototypes(emb, labels))
    assert check("7.1", logits[0].tolist())
    wrong = check("7.1", (-logits[0]).tolist())
    assert not wrong and "negatives" in wrong.message
    assert "mean" in check("7.1", [-2.0, -13.0, -13.0]).message or not check("7.1", [-2.0, -13.0, -13.0])


def test_exercise_7_2_batch_statistics():
    assert check("7.2", "b") and check("7.2", "(B)")
    for letter in "acd":
        fb = check("7.2", letter)
        assert not fb and len(fb.message) > 20
    assert "one letter" in check("7.2", 3).message


@pytest.mark.skipif(not omniglot.oneshot_path().is_file(), reason="no shipped results/oneshot.json")
def test_exercise_7_3_solution_reproduces_the_shipped_maml_error():
    """The chapter's solution (one forward pass per test image) gives the shipped non-transductive error, and the
    checker tells the transductive number, a fraction and an accuracy apart from it."""
    mm = omniglot.load_models(["MAML 20-way"])["MAML 20-way"]
    learner, labels = mm.learner_for(20), torch.arange(20)

    def predict(train, test):
        adapted = learner.adapt(mm.params, train, labels, steps=mm.spec.test_steps)
        with torch.no_grad():
            return torch.stack([mm.learner.model(adapted, torch.cat([train, t[None]]))[-1].argmax()
                                for t in test])

    answer = ml.score_oneshot(ml.load_oneshot_runs(), predict).error_percent
    assert check("7.3", answer)
    by = {r["setting"]: r["mean"] for r in omniglot.shipped_oneshot_rows() if r["algorithm"] == "MAML"}
    assert abs(answer - by["20 runs, non-transductive"]) < 1e-6
    assert "transductive" in check("7.3", by["20 runs, transductive"]).message
    assert "percent" in check("7.3", answer / 100).message
    assert "error rate" in check("7.3", 100 - answer).message


# ---- the shipped results ------------------------------------------------------------------------------------

@pytest.mark.skipif(not omniglot.results_path().is_file(), reason="no shipped results/omniglot.json")
def test_shipped_results_cover_every_method_setting_and_600_episodes():
    rows = omniglot.shipped_rows()
    final = [r for r in rows if r.get("final")]
    for spec in omniglot.RUNS:
        for setting in spec.settings:
            found = [r for r in final if r["run"] == spec.name and r["setting"] == setting]
            assert len(found) == 1, (spec.name, setting)
            r = found[0]
            assert r["n_tasks"] + r["diverged_tasks"] >= 600 and r["budget"] == "cpu"
            assert r["published"] == omniglot.PUBLISHED[spec.method, setting]
            assert r["train_seconds"] > 0 and math.isfinite(r["mean"])
    nt = [r for r in final if r["setting"].endswith("non-transductive")]
    assert {r["algorithm"] for r in nt} == set(omniglot.METHODS)


@pytest.mark.skipif(not omniglot.oneshot_path().is_file(), reason="no shipped results/oneshot.json")
def test_shipped_oneshot_results_and_checkpoints_agree():
    rows = read_results(omniglot.oneshot_path())
    methods = {r["algorithm"] for r in rows if r["budget"] == "cpu" and not r["algorithm"].startswith("nearest")}
    assert methods == set(omniglot.METHODS)
    for spec in omniglot.RUNS:
        path = omniglot.checkpoint_path(spec.name, "cpu", 0)
        assert path.is_file() and path.stat().st_size < 3_000_000, path
