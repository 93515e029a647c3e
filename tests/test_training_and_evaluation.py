"""The training loop, seeds, checkpoints, budgets and evaluation statistics."""

import math

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core.evaluation import TEST_SEED_OFFSET, t_critical


def _train(seed, **kw):
    learner = ml.MAML(ml.MLP((1, 16, 16, 1)), alpha=0.01)
    return ml.meta_train(learner, ml.SinusoidTasks(), iterations=20, meta_batch=4, seed=seed,
                         progress=False, **kw)


def test_same_seed_same_result_and_different_seed_different_result():
    a, b, c = _train(0), _train(0), _train(1)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    assert any(not torch.equal(a.params[k], c.params[k]) for k in a.params)
    assert a.history.metrics == b.history.metrics


def test_task_sampling_is_reproducible():
    f = ml.SinusoidTasks()
    x, y = f.sample(3, seed=7), f.sample(3, seed=7)
    assert torch.equal(x.x_support, y.x_support) and torch.equal(x.y_query, y.y_query)
    assert not torch.equal(x.x_support, f.sample(3, seed=8).x_support)


def test_sinusoid_ranges_and_shapes():
    b = ml.SinusoidTasks().sample(500, shots=5, queries=7, seed=0)
    assert b.x_support.shape == (500, 5, 1) and b.y_query.shape == (500, 7, 1)
    amp, phase = b.info["amplitude"], b.info["phase"]
    assert amp.min() >= 0.1 and amp.max() <= 5.0 and phase.min() >= 0 and phase.max() <= math.pi
    assert b.x_support.abs().max() <= 5.0
    torch.testing.assert_close(b.y_support, amp[:, None, None] * torch.sin(b.x_support - phase[:, None, None]))


def test_history_is_logged_on_schedule_and_callbacks_can_stop():
    seen = []
    res = _train(0, log_every=5, callbacks=[lambda it, m, p: seen.append(it) or (it < 10)])
    assert seen == [5, 10]
    assert res.history.iterations == [5, 10]
    assert set(res.history.metrics) == {"loss", "loss_before"}


def test_training_does_not_modify_the_initial_params():
    model = ml.MLP((1, 4, 1))
    init = model.init(0)
    copy = {k: v.clone() for k, v in init.items()}
    ml.meta_train(ml.MAML(model), ml.SinusoidTasks(), iterations=3, params=init, progress=False)
    for k in init:
        assert torch.equal(init[k], copy[k])


def test_meta_training_lowers_the_post_adaptation_loss_on_the_toy():
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    res = ml.meta_train(learner, ml.QuadraticTasks(), iterations=300, meta_batch=20, outer_lr=0.05,
                        params=learner.model.init(value=[-3.0, 4.0]), progress=False, log_every=10)
    loss = res.history.metrics["loss"]
    assert np.mean(loss[-5:]) < 0.2 * np.mean(loss[:2])


def test_budget_presets_set_the_loop_and_overrides_win():
    res = ml.meta_train(ml.MAML(ml.LinearModel(2), alpha=0.1), ml.QuadraticTasks(), budget="quick",
                        progress=False)
    quick = ml.preset("quadratic", "quick")
    assert res.history.steps_done == quick.iterations and res.config == quick
    assert ml.preset("sinusoid", "cpu").iterations == 70_000
    assert ml.preset("sinusoid", "cpu", iterations=5).iterations == 5
    assert ml.preset("sinusoid", "cpu").eval_tasks >= 600


def test_checkpoint_roundtrip_with_weights_only(tmp_path):
    res = _train(0)
    path = res.save(tmp_path / "ckpt" / "maml.pt")
    raw = torch.load(path, weights_only=True)  # must not need pickled code
    assert raw["format"] == "metalearn-checkpoint"
    ckpt = ml.load_checkpoint(path, res.learner.model)
    for k in res.params:
        assert torch.equal(ckpt.params[k], res.params[k])
    meta = ckpt.metadata
    assert meta["learner"]["algorithm"] == "MAML" and meta["seed"] == 0 and meta["budget"] == "quick"
    params, history = ml.load_params(path, res.learner)
    assert history.iterations == res.history.iterations
    assert ckpt.package_version == ml.__version__


def test_t_critical_values():
    assert t_critical(1) == pytest.approx(12.706)
    assert t_critical(10) == pytest.approx(2.228)
    assert t_critical(30) == pytest.approx(2.042)
    assert t_critical(120) == pytest.approx(1.980, abs=2e-3)
    assert t_critical(10**6) == pytest.approx(1.96, abs=1e-3)


def test_mean_ci95_against_a_direct_computation():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 2.0, size=600)
    mean, ci = ml.mean_ci95(v)
    direct = 1.9639 * np.sqrt(((v - v.mean()) ** 2).sum() / 599) / np.sqrt(600)  # t_{0.975, 599}
    assert mean == pytest.approx(v.mean())
    assert ci == pytest.approx(direct, rel=2e-3)
    m1, c1 = ml.mean_ci95([2.0])
    assert m1 == 2.0 and math.isnan(c1)


def test_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        mean, ci = ml.mean_ci95(rng.normal(1.0, 2.0, size=20))   # t-based: exact for normal data
        hits += abs(mean - 1.0) <= ci
    assert 0.93 < hits / 2000 < 0.97


def test_adaptation_curve_shapes_and_statistics():
    family = ml.QuadraticTasks()
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    params = learner.model.init(value=[1.0, 1.0])
    curve = ml.adaptation_curve(learner, params, family, steps=4, n_tasks=30, seed=3)
    assert curve.losses.shape == (30, 5) and curve.steps.tolist() == [0, 1, 2, 3, 4]
    mean, ci = ml.mean_ci95(curve.losses[:, 2])
    assert curve.mean[2] == pytest.approx(mean) and curve.ci95[2] == pytest.approx(ci)
    assert curve.mean[4] < curve.mean[0]          # gradient steps on a convex toy help
    # the loss after k steps agrees with the closed form on the same test tasks
    batch = family.sample(30, shots=family.default_shots, queries=100,
                          generator=ml.make_generator(TEST_SEED_OFFSET + 3))
    adapted = family.adapted(params["w"], batch, 0.1, 2)
    e = adapted - batch.info["w"]
    closed = 0.5 * torch.einsum("bi,bij,bj->b", e, family.hessian(batch.x_query), e)
    np.testing.assert_allclose(curve.losses[:, 2], closed.numpy(), rtol=1e-4)


def test_a_curve_that_records_some_steps_gives_those_steps_numbers():
    family = ml.QuadraticTasks()
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    params = learner.model.init(value=[1.0, 1.0])
    full = ml.adaptation_curve(learner, params, family, steps=6, n_tasks=30, seed=3)
    some = ml.adaptation_curve(learner, params, family, steps=6, n_tasks=30, seed=3, record=(6, 0, 2))
    assert some.steps.tolist() == [0, 2, 6] and some.losses.shape == (30, 3)
    np.testing.assert_allclose(some.losses, full.losses[:, [0, 2, 6]], rtol=1e-6)
    for s in (0, 2, 6):
        assert some.at(s) == pytest.approx(full.at(s))
    with pytest.raises(ml.ConfigError, match="measured steps 0, 2, 6, not 3"):
        some.at(3)
    for bad in ((7,), (), (-1,), (1.5,)):
        with pytest.raises(ml.ConfigError, match="record must list step counts between 0 and steps=6"):
            ml.adaptation_curve(learner, params, family, steps=6, n_tasks=5, record=bad)


def test_test_tasks_never_come_from_the_training_stream():
    family = ml.SinusoidTasks()
    train = family.sample(50, generator=ml.make_generator(0))
    test = family.sample(50, generator=ml.make_generator(TEST_SEED_OFFSET + 0))
    assert not set(train.info["amplitude"].tolist()) & set(test.info["amplitude"].tolist())


def test_adaptation_curve_default_task_count_comes_from_the_budget():
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    curve = ml.adaptation_curve(learner, learner.model.init(), ml.QuadraticTasks(), steps=1, budget="quick")
    assert curve.n_tasks == ml.preset("quadratic", "quick").eval_tasks


def test_exclude_diverged_by_step_keeps_each_task_until_it_diverges():
    family = ml.SinusoidTasks()
    learner = ml.MAML(ml.MLP((1, 40, 40, 1)), alpha=0.01)
    params = learner.model.init(0)
    # a large test-time α: adaptation diverges on some tasks after a few steps, not at once
    curve = ml.adaptation_curve(learner, params, family, steps=8, shots=10, n_tasks=60, alpha=0.3,
                                exclude_diverged="by step")
    kept = curve.kept
    assert kept.shape == (60, 9) and kept[:, 0].all()
    assert (kept[:, 1:] <= kept[:, :-1]).all()                     # once left out, left out for good
    assert curve.diverged == int((~kept[:, -1]).sum()) > 0
    for s in range(9):
        n, left_out = curve.tasks_at(s)
        assert n + left_out == 60
        mean, ci = ml.mean_ci95(curve.losses[kept[:, s], s])
        assert curve.mean[s] == pytest.approx(mean) and curve.ci95[s] == pytest.approx(ci)
    whole = ml.adaptation_curve(learner, params, family, steps=8, shots=10, n_tasks=60, alpha=0.3,
                                exclude_diverged=True)
    assert whole.diverged == curve.diverged and whole.tasks_at(0) == (60 - curve.diverged, curve.diverged)
    with pytest.raises(ml.ConfigError, match="by step"):
        ml.adaptation_curve(learner, params, family, steps=2, n_tasks=5, exclude_diverged="sometimes")


def test_freed_memory_is_kept_for_reuse_on_linux():
    import sys

    from metalearn_core.allocator import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first                       # once per process
    assert first is sys.platform.startswith("linux")          # glibc on the book's machines; a no-op elsewhere


def test_a_curve_recording_some_steps_names_the_step_where_the_loss_blew_up():
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    params = learner.model.init(value=[1.0, 1.0])
    # the message reads the loss of the column that holds step 6 (the curve has three columns, not seven)
    with pytest.raises(ml.DivergenceError, match=r"grew from 1\.33 before adaptation to 2\.31e\+08 after 6 inner step"):
        ml.adaptation_curve(learner, params, ml.QuadraticTasks(), steps=6, n_tasks=30, alpha=1.0, record=(0, 3, 6))


def test_intervals_are_over_groups_only_when_there_are_enough_groups():
    values = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0])
    assert ml.evaluation.mean_ci95_by_group(values, np.array([0, 0, 1, 1, 2, 2])) == \
        ml.evaluation.group_mean_ci95(values, np.array([0, 0, 1, 1, 2, 2]))
    mean, ci = ml.mean_ci95(values)
    assert ml.evaluation.mean_ci95_by_group(values, np.array([0, 0, 0, 1, 1, 1])) == (mean, ci, 0)
    assert ml.evaluation.mean_ci95_by_group(values, None) == (mean, ci, 0)
