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
    """Three networks trained at the quick budget: MAML 5-way (second order) and the two ProtoNets (any N; the
    second takes the 5-shot test)."""
    root = tmp_path_factory.mktemp("omniglot-results")
    models = omniglot.train(["MAML 5-way", "ProtoNet", "ProtoNet 5-shot test"], budget="quick", root=root,
                            progress=False, log=lambda *_: None)
    return root, models


# ---- the runs -----------------------------------------------------------------------------------------------

def test_runs_cover_every_method_and_setting():
    assert {s.method for s in omniglot.RUNS} == set(omniglot.METHODS)
    for method in omniglot.METHODS:
        covered = {x for s in omniglot.RUNS if s.method == method for x in s.settings}
        assert covered == set(omniglot.SETTINGS), method
    assert len({s.slug for s in omniglot.RUNS}) == len(omniglot.RUNS)


def test_each_method_trains_as_its_paper_did():
    by = {s.name: s for s in omniglot.RUNS}
    # MAML and FOMAML: the shots of training are the shots of testing (a 5-shot network for 5-shot episodes)
    for name, spec in by.items():
        if spec.method in ("MAML", "FOMAML"):
            assert {omniglot.SETTINGS[x] for x in spec.settings} == {(spec.ways, spec.shots)}, name
    # Reptile: more training shots than test shots, inner mini-batches, 50 test steps (Nichol et al.)
    for name in ("Reptile 5-way", "Reptile 20-way"):
        spec = by[name]
        assert spec.shots == 10 and spec.inner_batch is not None and spec.test_steps == 50
        assert spec.learner("quick").inner_batch == spec.inner_batch
    # ProtoNets: trained with more ways than tested (Snell et al.: 60-way)
    assert by["ProtoNet"].ways == 60
    assert all(omniglot.SETTINGS[x][0] < 60 for x in by["ProtoNet"].settings)
    # every departure from the paper is stated for the tables (ProtoNet's 1-shot network has none but its length)
    assert all(spec.departures for spec in omniglot.RUNS if spec.name != "ProtoNet")
    # MAML's code uses as many training queries as shots
    assert by["MAML 5-way"].queries == by["FOMAML 5-way"].queries == 1
    assert by["MAML 5-way 5-shot"].queries == 5


def test_only_networks_tested_inside_the_runs_train_on_the_5_shot_test_alphabets(images):
    test_chars = set(ml.OmniglotTasks(images, "test").class_characters.tolist())
    for spec in omniglot.RUNS:
        train = ml.OmniglotTasks(images, "train", splits=spec.splits)
        val = ml.OmniglotTasks(images, "val", splits=spec.splits)
        chars = set(train.class_characters.tolist())
        assert not chars & set(val.class_characters.tolist()), spec.name
        five_shot = any(omniglot.SETTINGS[x][1] == 5 for x in spec.settings)
        assert spec.all_background == bool(chars & test_chars), spec.name
        assert not (five_shot and spec.all_background), spec.name
        assert train.n_characters == (220 if spec.all_background else 161), spec.name
    assert {s.name for s in omniglot.RUNS if s.all_background} == {
        "MAML 5-way", "FOMAML 5-way", "ProtoNet", "MAML 20-way", "FOMAML 20-way"}


def test_one_query_at_a_time_only_where_a_table_needs_it():
    by = {s.name: s for s in omniglot.RUNS}
    nt = {(name, x) for name, spec in by.items() for x in spec.settings
          if omniglot._one_at_a_time(omniglot.TrainedModel(spec, None, {}, None), x)}
    assert nt == {("MAML 5-way", "5-way 1-shot"), ("FOMAML 5-way", "5-way 1-shot"), ("Reptile 5-way", "5-way 1-shot"),
                  ("ProtoNet", "5-way 1-shot"), ("ProtoNet", "20-way 1-shot"), ("Reptile 20-way", "20-way 1-shot")}
    assert omniglot.shown_steps(3) == [0, 1, 3] and omniglot.shown_steps(50) == [0, 1, 5, 10, 50]
    assert omniglot.shown_steps(0) == [0]


def test_budget_caps_inner_steps_of_maml_but_never_reptile():
    by = {s.name: s for s in omniglot.RUNS}
    assert by["MAML 20-way"].train_steps("full") == 5        # the paper's
    assert by["MAML 20-way"].train_steps("cpu") == 1         # what the cpu budget affords
    assert by["FOMAML 20-way"].train_steps("cpu") == 1
    assert by["Reptile 20-way"].train_steps("cpu") == 10     # one step would be joint training
    assert by["MAML 5-way"].learner("cpu").inner_steps == 1
    assert by["MAML 5-way"].model("cpu").width == ml.preset("omniglot", "cpu").width


def test_learners_classify_only_the_ways_they_can():
    by = {s.name: s for s in omniglot.RUNS}
    with pytest.raises(ml.ConfigError, match="5-way head"):
        by["MAML 5-way"].learner("quick", ways=20)
    proto = by["ProtoNet"]
    assert proto.learner("quick", ways=5).ways == 5 and proto.learner("quick").ways == 60


def test_unknown_run_names_list_the_runs():
    with pytest.raises(ml.ConfigError, match="MAML 5-way"):
        omniglot.checkpoint_path("MAML 10-way")
    with pytest.raises(ml.ConfigError, match="ProtoNet"):
        omniglot.train(["Siamese"], budget="quick", save=False)
    assert [s.name for s in omniglot._specs(["maml"])] == ["MAML 5-way", "MAML 5-way 5-shot", "MAML 20-way"]
    # "ProtoNet" is a method with two runs and the name of one: the name wins
    assert [s.name for s in omniglot._specs(["ProtoNet"])] == ["ProtoNet"]
    assert [s.name for s in omniglot._specs(["protonet-5-shot-test"])] == ["ProtoNet 5-shot test"]


# ---- training and evaluation end to end (quick budget) ------------------------------------------------------

def test_training_records_history_validation_and_checkpoint(trained):
    root, models = trained
    cfg = ml.preset("omniglot", "quick")
    m = models["MAML 5-way"]
    assert m.history.steps_done == cfg.iterations
    val = m.validation
    assert val["iterations"][-1] == cfg.iterations and len(val["iterations"]) >= 2
    assert all(0 <= a <= 100 for a in val["accuracy"])
    assert len(val["minutes"]) == len(val["iterations"]) and val["minutes"] == sorted(val["minutes"])
    # the checkpoint keeps the parameters that did best on validation, never the test
    best = val["iterations"][int(np.argmax(val["accuracy"]))]
    assert val["best_iteration"] == best
    assert not omniglot.resume_path("MAML 5-way", "quick", 0, root).exists()     # removed once finished
    assert m.path == omniglot.checkpoint_path("MAML 5-way", "quick", 0, root) and m.path.is_file()
    assert m.path.stat().st_size < 3_000_000
    loaded = omniglot.load_models(["MAML 5-way", "ProtoNet"], budget="quick", root=root)
    for name, lm in loaded.items():
        for k, v in models[name].params.items():
            assert torch.equal(v, lm.params[k])
        assert lm.validation == models[name].validation


def test_networks_trained_two_at_a_time_equal_those_trained_alone_on_one_thread(tmp_path):
    """jobs=2 (how the shipped networks were trained) gives exactly the networks of a one-thread run."""
    names = ["FOMAML 5-way", "ProtoNet"]
    together = omniglot.train(names, budget="quick", root=tmp_path / "a", jobs=2, progress=False,
                              log=lambda *_: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = omniglot.train(names, budget="quick", root=tmp_path / "b", progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    for name in names:
        for k, v in alone[name].params.items():
            assert torch.equal(v, together[name].params[k]), (name, k)
    with pytest.raises(ml.ConfigError, match="jobs"):
        omniglot.train(names, budget="quick", root=tmp_path / "c", jobs=0)


def test_reuse_loads_instead_of_training(trained):
    root, models = trained
    again = omniglot.train(["ProtoNet"], budget="quick", root=root, reuse=True, progress=False, log=lambda *_: None)
    assert torch.equal(again["ProtoNet"].params["blocks.0.conv.weight"],
                       models["ProtoNet"].params["blocks.0.conv.weight"])


def test_evaluation_rows_follow_the_schema_and_settings(trained, images):
    _, models = trained
    rows, curves = omniglot.evaluate_models(models, images=images, n_tasks=20, progress=False)
    for r in rows:
        validate_row(r)
        assert r["metric"] == "accuracy" and 0 <= r["mean"] <= 100 and r["n_tasks"] == 20
    maml = [r for r in rows if r["algorithm"] == "MAML" and r["setting"] == "5-way 1-shot"]
    assert [r["steps"] for r in maml] == [0, 1, 3]                         # 0, 1 and the test steps
    assert [r["published"] for r in maml] == [None, None, 98.7]           # published beside the final step
    settings = {r["setting"] for r in rows}
    assert {"5-way 1-shot", "5-way 5-shot", "20-way 1-shot", "5-way 1-shot, non-transductive",
            "20-way 1-shot, non-transductive"} <= settings
    assert not any(r["algorithm"] == "MAML" and r["setting"] == "20-way 1-shot" for r in rows)
    proto = [r for r in rows if r["algorithm"] == "ProtoNet"]
    assert {r["steps"] for r in proto} == {0}
    # the published number of the same protocol: ProtoNet's is non-transductive, so the transductive row of
    # 1-shot has none and the 5-shot row (transductive only) shows it marked as the other protocol's
    final = {(r["algorithm"], r["setting"]): r for r in rows if r["final"]}
    assert final["ProtoNet", "5-way 1-shot, non-transductive"]["published"] == 98.8
    assert final["ProtoNet", "5-way 1-shot"]["published"] is None
    assert final["ProtoNet", "5-way 5-shot"]["published_protocol"] == "non-transductive"
    # accuracy rows are percentages of the curve's fractions
    curve = curves["5-way 1-shot", "MAML 5-way"]
    assert maml[-1]["mean"] == pytest.approx(100 * curve.mean[-1], abs=1e-3)
    text = omniglot.table(rows)
    assert "98.7" in text and "ProtoNet" in text and "differs from the paper" in text
    assert "one query at a time" in omniglot.html_table(rows).data


def test_targets_table_reads_the_rows_it_names(trained, images):
    _, models = trained
    rows, _ = omniglot.evaluate_models(models, images=images, n_tasks=20, settings=["5-way 1-shot"], progress=False)
    one, _ = omniglot.oneshot_rows(models)
    lines = {line[0]: line for line in omniglot.targets_rows(rows, one, models)}
    assert set(lines) == {"MAML, 5-way 1-shot", "ProtoNet, 5-way 1-shot", "best error on the 20 one-shot runs"}
    maml = next(r for r in rows if r["run"] == "MAML 5-way" and r["setting"] == "5-way 1-shot" and r["final"])
    assert lines["MAML, 5-way 1-shot"][2].startswith(f"{maml['mean']:.1f} ±")
    assert lines["MAML, 5-way 1-shot"][3] == ("yes" if maml["mean"] >= 95 else "no")
    proto = next(r for r in one if r["algorithm"] == "ProtoNet" and r["setting"].endswith("non-transductive"))
    assert "ProtoNet" in lines["best error on the 20 one-shot runs"][2] or proto["mean"] >= min(
        r["mean"] for r in one if not r["algorithm"].startswith("nearest"))
    # the full budget's hours scale the measured step by the papers' meta-batch and iterations
    m = models["MAML 5-way"]
    full, quick = ml.preset("omniglot", "full"), ml.preset("omniglot", "quick")
    assert omniglot.full_budget_hours(m) == pytest.approx(
        m.ms_per_step * full.meta_batch / quick.meta_batch * full.iterations / 3.6e6)


def test_test_episodes_span_alphabets_and_intervals_cover_them(trained, images):
    """1-shot rows rest on the 10 evaluation alphabets of the one-shot runs with an interval over alphabets;
    5-shot rows on the two held-out background alphabets."""
    _, models = trained
    rows, curves = omniglot.evaluate_models(models, images=images, n_tasks=40, non_transductive=False,
                                            progress=False)
    final = {(r["run"], r["setting"]): r for r in rows if r["final"]}
    one = final["MAML 5-way", "5-way 1-shot"]
    assert one["test_alphabets"] == 10 and one["ci_over"] == "alphabets" and len(one["per_alphabet"]) == 10
    curve = curves["5-way 1-shot", "MAML 5-way"]
    mean, ci, n = curve.over_groups(3)
    assert n == 10 and one["ci95"] == pytest.approx(100 * ci, abs=1e-3)
    # 40 episodes over 20 runs: every run twice, every alphabet four times
    assert sorted(np.bincount(curve.groups).tolist()) == [4] * 10
    five = final["ProtoNet 5-shot test", "5-way 5-shot"]
    assert five["test_alphabets"] == 2 and set(five["per_alphabet"]) == {"Sanskrit", "Tagalog"}
    assert five["ci_over"] == "episodes"
    # no training character is in a test episode
    train_chars = set(ml.OmniglotTasks(images, "train").class_characters.tolist())
    fam = omniglot.test_family("5-way 5-shot", images)
    batch = fam.sample(10, shots=5, queries=15, seed=0)
    assert not set(batch.info["characters"].flatten().tolist()) & train_chars
    assert {images.alphabets[int(c)] for c in batch.info["characters"].flatten()} == {"Sanskrit", "Tagalog"}


def test_paired_differences_use_the_shared_episodes(trained, images):
    _, models = trained
    _, curves = omniglot.evaluate_models(models, images=images, n_tasks=40, settings=["5-way 1-shot"],
                                         non_transductive=False, progress=False)
    pairs = omniglot.paired_differences(curves, "5-way 1-shot", [("ProtoNet", "MAML 5-way")])
    p = pairs[0]
    a, b = curves["5-way 1-shot", "ProtoNet"], curves["5-way 1-shot", "MAML 5-way"]
    diff = 100 * (a.losses[:, -1] - b.losses[:, -1])
    per = [diff[a.groups == g].mean() for g in range(10)]
    assert p["mean"] == pytest.approx(np.mean(per), abs=1e-3) and p["n_alphabets"] == 10
    assert p["ci95"] == pytest.approx(ml.mean_ci95(per)[1], abs=1e-3)
    assert p["verdict"] in ("ProtoNet better", "MAML 5-way better", "no clear difference")
    # a network compared with itself differs by exactly nothing
    same = omniglot.paired_differences(curves, "5-way 1-shot", [("ProtoNet", "ProtoNet")])[0]
    assert same["mean"] == 0 and same["verdict"] == "no clear difference"
    assert "a − b" in omniglot.paired_html_table(pairs).data
    # a network tested on fewer episodes is paired on the first ones, which are the same episodes
    _, short = omniglot.evaluate_models({"MAML 5-way": models["MAML 5-way"]}, images=images, n_tasks=20,
                                        settings=["5-way 1-shot"], non_transductive=False, progress=False)
    mixed = {**curves, ("5-way 1-shot", "MAML 5-way"): short["5-way 1-shot", "MAML 5-way"]}
    p20 = omniglot.paired_differences(mixed, "5-way 1-shot", [("ProtoNet", "MAML 5-way")])[0]
    first = 100 * (a.losses[:20, -1] - b.losses[:20, -1])
    assert p20["n_tasks"] == 20 and p20["mean"] == pytest.approx(
        np.mean([first[a.groups[:20] == g].mean() for g in range(10)]), abs=1e-3)
    # ... but not when the shared part is not a whole number of the 20 episodes drawn at a time
    _, odd = omniglot.evaluate_models({"MAML 5-way": models["MAML 5-way"]}, images=images, n_tasks=30,
                                      settings=["5-way 1-shot"], non_transductive=False, progress=False)
    with pytest.raises(ml.ConfigError, match="multiple of the 20"):
        omniglot.paired_differences({**curves, ("5-way 1-shot", "MAML 5-way"): odd["5-way 1-shot", "MAML 5-way"]},
                                    "5-way 1-shot", [("ProtoNet", "MAML 5-way")])


def test_same_episodes_for_every_method(trained, images):
    _, models = trained
    _, curves = omniglot.evaluate_models(models, images=images, n_tasks=4, settings=["5-way 1-shot"],
                                         non_transductive=False, progress=False)
    fam = omniglot.test_family("5-way 1-shot", images)
    # re-sampling the test stream gives the episodes both networks were scored on
    a = fam.sample(4, shots=1, queries=1, generator=ml.make_generator(ml.evaluation.TEST_SEED_OFFSET))
    b = fam.sample(4, shots=1, queries=1, generator=ml.make_generator(ml.evaluation.TEST_SEED_OFFSET))
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
    assert all(r["test_alphabets"] == 10 for r in rows)
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


def test_a_network_trained_on_held_out_alphabets_is_refused(trained, tmp_path):
    """A checkpoint of the earlier split (Tagalog in training) must not be tested on Tagalog; a network of the
    one-shot runs must not have seen the validation alphabet, nor one that missed Sanskrit pass as trained on it."""
    root, models = trained
    m = models["ProtoNet 5-shot test"]
    family = m.metadata["family"].replace("Latin", "Latin, Tagalog")
    path = omniglot.checkpoint_path("ProtoNet 5-shot test", "quick", 0, tmp_path)
    path.parent.mkdir(parents=True)
    ml.save_checkpoint(path, m.params, model=m.learner.model, metadata={**m.metadata, "family": family})
    with pytest.raises(ml.CheckpointError, match="held-out Tagalog"):
        omniglot.load_models(["ProtoNet 5-shot test"], budget="quick", root=tmp_path)
    m = models["ProtoNet"]
    path = omniglot.checkpoint_path("ProtoNet", "quick", 0, tmp_path)
    for family, what in ((m.metadata["family"].replace("Latin", "Latin, Early_Aramaic"), "held-out Early_Aramaic"),
                         (m.metadata["family"].replace("Sanskrit, ", ""), "than ProtoNet's")):
        ml.save_checkpoint(path, m.params, model=m.learner.model, metadata={**m.metadata, "family": family})
        with pytest.raises(ml.CheckpointError, match=what):
            omniglot.load_models(["ProtoNet"], budget="quick", root=tmp_path)


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
    # --jobs belongs to omniglot: elsewhere, or below 1, it is a one-line error
    assert cli.main(["evaluate", "sinusoid", "--jobs", "2"]) == 2
    assert "--jobs applies to the omniglot experiment only" in capsys.readouterr().err
    assert cli.main(["evaluate", "omniglot", "--jobs", "0", "--results", str(root)]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_evaluating_in_two_processes_gives_the_same_curves(trained, images):
    _, models = trained
    pick = {k: models[k] for k in ("MAML 5-way", "ProtoNet")}
    rows1, one = omniglot.evaluate_models(pick, images=images, n_tasks=20, settings=["5-way 1-shot"], progress=False)
    rows2, two = omniglot.evaluate_models(pick, images=images, n_tasks=20, settings=["5-way 1-shot"], progress=False,
                                          jobs=2)
    assert set(one) == set(two) and rows1 == rows2
    for key in one:
        np.testing.assert_array_equal(one[key].losses, two[key].losses)


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


@pytest.mark.skipif(not omniglot.checkpoint_path("MAML 20-way").is_file(), reason="no shipped MAML 20-way")
def test_exercise_7_3_solution_is_accepted_and_its_number_is_not_on_the_page():
    """The chapter's solution (one forward pass per test image, one step) is accepted; the numbers the page prints
    (the five-step errors of the one-shot table), the transductive number, a fraction and an accuracy are not."""
    from metalearn_core.exercises.ch07 import EX_7_3_STEPS

    mm = omniglot.load_models(["MAML 20-way"])["MAML 20-way"]
    learner, labels = mm.learner_for(20), torch.arange(20)

    def predict(train, test, transductive=False):
        adapted = learner.adapt(mm.params, train, labels, steps=EX_7_3_STEPS)
        with torch.no_grad():
            if transductive:
                return learner.model(adapted, test).argmax(-1)
            return torch.stack([learner.model(adapted, torch.cat([train, t[None]]))[-1].argmax() for t in test])

    runs = ml.load_oneshot_runs()
    answer = ml.score_oneshot(runs, predict).error_percent
    assert check("7.3", answer)
    assert EX_7_3_STEPS != mm.spec.test_steps
    printed = {r["mean"] for r in omniglot.shipped_oneshot_rows() if r["algorithm"] == "MAML"}
    assert all(abs(answer - p) > 0.05 for p in printed), (answer, printed)
    together = ml.score_oneshot(runs, lambda tr, te: predict(tr, te, True)).error_percent
    assert abs(together - answer) > 0.05              # the two protocols differ, so the checker can tell them apart
    assert "transductive" in check("7.3", together).message
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
            n = ml.preset(spec.experiment, "cpu").eval_tasks
            assert r["n_tasks"] + r["diverged_tasks"] >= n and r["budget"] == "cpu"
            assert r["test_alphabets"] >= 2 and r["train_seconds"] > 0 and math.isfinite(r["mean"])
            same = omniglot.PUBLISHED.get((spec.method, setting, "transductive"))
            other = omniglot.PUBLISHED.get((spec.method, setting, "non-transductive"))
            # the transductive row shows the published number of its own protocol, or else (5-shot) the other's
            assert r["published"] == (same if same is not None else (other if setting == "5-way 5-shot" else None))
            assert r["best_iteration"] is not None
    nt = [r for r in final if r["setting"].endswith("non-transductive")]
    assert {r["algorithm"] for r in nt} == set(omniglot.METHODS)
    assert all(r["test_alphabets"] == 10 for r in nt)


@pytest.mark.skipif(not omniglot.oneshot_path().is_file(), reason="no shipped results/oneshot.json")
def test_shipped_oneshot_results_and_checkpoints_agree():
    rows = read_results(omniglot.oneshot_path())
    methods = {r["algorithm"] for r in rows if r["budget"] == "cpu" and not r["algorithm"].startswith("nearest")}
    assert methods == set(omniglot.METHODS)
    for spec in omniglot.RUNS:
        path = omniglot.checkpoint_path(spec.name, "cpu", 0)
        assert path.is_file() and path.stat().st_size < 3_000_000, path
