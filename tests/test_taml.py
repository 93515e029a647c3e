"""TAML, Meta-SGD and the learned update rule: inequality measures by hand, gradients against finite
differences of objectives written from scratch (numpy, closed-form gradients of linear models), the
reductions to MAML, and the errors for bad input."""

import math

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core.inequality import (MEASURES, atkinson, generalized_entropy, gini, inequality,
                                       mean_log_deviation, theil, variance_of_logs)

F64 = torch.float64


# ---- inequality measures ------------------------------------------------------------------------------------

def test_measures_against_hand_computed_values():
    # losses (1, 3): mean 2, shares (1/2, 3/2); every number below was worked out by hand
    losses = torch.tensor([1.0, 3.0], dtype=F64)
    expected = {
        "theil": 0.5 * (0.5 * math.log(0.5) + 1.5 * math.log(1.5)),        # 0.130812
        "ge(2)": 0.125,                                                       # half the squared CV, (1/2)²/2
        "ge(0)": -0.5 * (math.log(0.5) + math.log(1.5)),                      # 0.143841
        "atkinson(0.5)": 1 - ((math.sqrt(0.5) + math.sqrt(1.5)) / 2) ** 2,    # 0.066987
        "atkinson(1)": 1 - math.sqrt(0.75),                                   # 0.133975
        "gini": 0.25,                                                         # (|1-3|+|3-1|) / (2·2²·2)
        "varlog": (math.log(3) / 2) ** 2,                                     # 0.301737
    }
    got = {"theil": theil(losses), "ge(2)": generalized_entropy(losses, 2), "ge(0)": generalized_entropy(losses, 0),
           "atkinson(0.5)": atkinson(losses, 0.5), "atkinson(1)": atkinson(losses, 1),
           "gini": gini(losses), "varlog": variance_of_logs(losses)}
    for name, value in expected.items():
        assert float(got[name]) == pytest.approx(value, abs=1e-12), name
    assert float(mean_log_deviation(losses)) == pytest.approx(expected["ge(0)"], abs=1e-12)
    assert float(generalized_entropy(losses, 1)) == pytest.approx(expected["theil"], abs=1e-12)


def test_gini_of_four_losses_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=F64)
    # Σ_i Σ_j |l_i - l_j| = 2·(1+2+5+1+4+3) = 32; 2·M²·μ = 2·16·3 = 96
    assert float(gini(losses)) == pytest.approx(32 / 96, abs=1e-12)
    # GE(2) = CV²/2 with the population variance: var = (4+1+0+9)/4 = 3.5, μ = 3
    assert float(generalized_entropy(losses, 2)) == pytest.approx(3.5 / 9 / 2, abs=1e-12)


SETTINGS = [("theil", {}), ("ge", {"ge_alpha": 2}), ("ge", {"ge_alpha": 0}), ("ge", {"ge_alpha": -1}),
            ("ge", {"ge_alpha": 0.5}), ("atkinson", {"atkinson_epsilon": 0.5}),
            ("atkinson", {"atkinson_epsilon": 2}), ("gini", {}), ("varlog", {})]


@pytest.mark.parametrize("measure,kw", SETTINGS)
def test_zero_for_equal_losses_and_scale_invariant(measure, kw):
    assert float(inequality(torch.full((7,), 2.5, dtype=F64), measure, **kw)) == pytest.approx(0, abs=1e-12)
    losses = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.1
    value = float(inequality(losses, measure, **kw))
    assert value > 1e-4                                                    # unequal losses: positive
    for scale in (1e-3, 7.3, 1e4):
        assert float(inequality(scale * losses, measure, **kw)) == pytest.approx(value, rel=1e-9)


def test_ge_is_continuous_at_its_limits():
    losses = torch.tensor([0.5, 1.0, 4.0], dtype=F64)
    assert float(generalized_entropy(losses, 1 + 1e-7)) == pytest.approx(float(theil(losses)), rel=1e-5)
    assert float(generalized_entropy(losses, 1e-7)) == pytest.approx(float(mean_log_deviation(losses)), rel=1e-5)


def test_measures_grow_with_inequality_and_have_finite_gradients_at_zero_loss():
    for measure in MEASURES:
        a = float(inequality(torch.tensor([1.0, 1.1, 0.9]), measure))
        b = float(inequality(torch.tensor([1.0, 3.0, 0.2]), measure))
        assert b > a, measure
        losses = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
        inequality(losses, measure).backward()
        assert torch.isfinite(losses.grad).all(), measure


@pytest.mark.parametrize("call,match", [
    (lambda: inequality(torch.ones(3), "entropy"), "unknown inequality measure 'entropy'"),
    (lambda: inequality(torch.ones(3), "ge", ge_alpha=float("nan")), "GE parameter α"),
    (lambda: inequality(torch.ones(3), "ge", ge_alpha="two"), "GE parameter α"),
    (lambda: inequality(torch.ones(3), "atkinson", atkinson_epsilon=-0.5), "at least 0"),
    (lambda: inequality(torch.tensor([1.0, -2.0]), "theil"), "non-negative losses"),
    (lambda: inequality(torch.ones(2, 2), "theil"), "1-D tensor"),
    (lambda: inequality(torch.tensor([1.0, float("inf")]), "gini"), "finite"),
])
def test_inequality_bad_input(call, match):
    with pytest.raises(ml.ConfigError, match=match):
        call()


# ---- small problems with closed-form gradients --------------------------------------------------------------

def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _classification_batch(n_tasks=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n_tasks, 6, 2, generator=g, dtype=F64)
    x_q = torch.randn(n_tasks, 9, 2, generator=g, dtype=F64)
    y_s = torch.randint(0, 3, (n_tasks, 6), generator=g)
    y_q = torch.randint(0, 3, (n_tasks, 9), generator=g)
    return ml.TaskBatch(x_s, y_s, x_q, y_q)


def _np_params(params):
    return {k: v.detach().numpy().copy() for k, v in params.items()}


def _np_taml_entropy_objective(p, batch, alpha, lam, steps):
    """TAML's entropy objective for a linear softmax classifier, written with numpy and hand gradients."""
    total = 0.0
    for t in range(batch.n_tasks):
        xs, ys = batch.x_support[t].numpy(), batch.y_support[t].numpy()
        xq, yq = batch.x_query[t].numpy(), batch.y_query[t].numpy()
        w, b = p["0.weight"], p["0.bias"]
        ws, bs = w.copy(), b.copy()
        for _ in range(steps):
            probs = _softmax(xs @ ws.T + bs)
            err = probs - np.eye(3)[ys]                               # d(mean CE)/d logits, times n
            ws, bs = ws - alpha * err.T @ xs / len(ys), bs - alpha * err.mean(0)

        def ce_and_entropy(w_, b_):
            probs = _softmax(xq @ w_.T + b_)
            ce = -np.log(probs[np.arange(len(yq)), yq]).mean()
            return ce, -(probs * np.log(probs)).sum(-1).mean()

        ce_after, h_after = ce_and_entropy(ws, bs)
        _, h_before = ce_and_entropy(w, b)
        total += ce_after + lam * (-h_before + h_after)
    return total / batch.n_tasks


def _np_fd_grad(fn, params, eps=1e-6):
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for j in range(v.size):
            plus = {kk: vv.copy() for kk, vv in params.items()}
            minus = {kk: vv.copy() for kk, vv in params.items()}
            plus[k].flat[j] += eps
            minus[k].flat[j] -= eps
            g.flat[j] = (fn(plus) - fn(minus)) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize("steps", [1, 2])
def test_taml_entropy_gradient_against_finite_differences(steps):
    batch = _classification_batch()
    learner = ml.TAMLEntropy(ml.MLP((2, 3)), alpha=0.5, inner_steps=steps, lam=0.7)
    params = learner.model.init(0, dtype=F64)
    grads, metrics = learner.meta_gradient(params, batch)
    fd = _np_fd_grad(lambda p: _np_taml_entropy_objective(p, batch, 0.5, 0.7, steps), _np_params(params))
    for k in params:
        np.testing.assert_allclose(grads[k].numpy(), fd[k], rtol=1e-6, atol=1e-8)
    # the entropy term matters: its gradient alone is far from zero
    maml_grads, _ = ml.MAML(ml.MLP((2, 3)), alpha=0.5, inner_steps=steps,
                            loss=learner.loss).meta_gradient(params, batch)
    assert max(float((grads[k] - maml_grads[k]).abs().max()) for k in params) > 1e-3
    assert 0 < float(metrics["entropy_before"]) <= math.log(3) + 1e-12


def _regression_batch(n_tasks=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n_tasks, 5, 2, generator=g, dtype=F64)
    x_q = torch.randn(n_tasks, 7, 2, generator=g, dtype=F64)
    w = torch.randn(n_tasks, 2, 1, generator=g, dtype=F64)
    return ml.TaskBatch(x_s, x_s @ w + 0.3, x_q, x_q @ w + 0.3)


def _np_linear_inner(p, xs, ys, alpha_w, alpha_b, steps):
    w, b = p["0.weight"], p["0.bias"]                                   # [1, 2], [1]
    for _ in range(steps):
        r = xs @ w.T + b - ys                                           # [n, 1]
        gw, gb = 2 * r.T @ xs / len(xs), 2 * r.mean(0)
        w, b = w - alpha_w * gw, b - alpha_b * gb
    return w, b


def _np_mse(w, b, x, y):
    return float(((x @ w.T + b - y) ** 2).mean())


def test_meta_sgd_gradient_with_respect_to_the_learned_rates_against_finite_differences():
    batch = _regression_batch()
    learner = ml.MetaSGD(ml.MLP((2, 1)), alpha=0.05, inner_steps=2)
    params = learner.model.init(0, dtype=F64)
    # rates that differ per entry, so that a mix-up of entries would show
    params["lr.0.weight"] = torch.tensor([[0.03, 0.08]], dtype=F64)
    params["lr.0.bias"] = torch.tensor([0.11], dtype=F64)
    grads, _ = learner.meta_gradient(params, batch)

    def objective(p):
        total = 0.0
        for t in range(batch.n_tasks):
            xs, ys = batch.x_support[t].numpy(), batch.y_support[t].numpy()
            w, b = _np_linear_inner(p, xs, ys, p["lr.0.weight"], p["lr.0.bias"], 2)
            total += _np_mse(w, b, batch.x_query[t].numpy(), batch.y_query[t].numpy())
        return total / batch.n_tasks

    fd = _np_fd_grad(objective, _np_params(params))
    assert set(grads) == {"0.weight", "0.bias", "lr.0.weight", "lr.0.bias"}
    for k in params:
        np.testing.assert_allclose(grads[k].numpy(), fd[k], rtol=1e-6, atol=1e-9)
    assert float(grads["lr.0.weight"].abs().max()) > 1e-3


@pytest.mark.parametrize("measure,kw", [("theil", {}), ("ge", {"ge_alpha": 2}), ("gini", {}), ("varlog", {}),
                                        ("atkinson", {"atkinson_epsilon": 0.5})])
def test_taml_inequality_gradient_against_finite_differences(measure, kw):
    batch = _regression_batch()
    lam = 0.9
    learner = ml.TAMLInequality(ml.MLP((2, 1)), alpha=0.05, inner_steps=1, lam=lam, measure=measure, **kw)
    params = learner.model.init(0, dtype=F64)
    grads, metrics = learner.meta_gradient(params, batch)

    def objective(p):
        after, before = [], []
        for t in range(batch.n_tasks):
            xs, ys = batch.x_support[t].numpy(), batch.y_support[t].numpy()
            xq, yq = batch.x_query[t].numpy(), batch.y_query[t].numpy()
            w, b = _np_linear_inner(p, xs, ys, 0.05, 0.05, 1)
            after.append(_np_mse(w, b, xq, yq))
            before.append(_np_mse(p["0.weight"], p["0.bias"], xq, yq))
        return float(np.mean(after)) + lam * float(inequality(torch.tensor(before, dtype=F64), measure, **kw))

    fd = _np_fd_grad(objective, _np_params(params))
    for k in params:
        np.testing.assert_allclose(grads[k].numpy(), fd[k], rtol=1e-6, atol=1e-9)
    before = learner._map_tasks(learner.task_loss, params, batch.x_query, batch.y_query)
    assert float(metrics["inequality"]) == pytest.approx(float(inequality(before, measure, **kw)))


# ---- reductions to MAML --------------------------------------------------------------------------------------

def _assert_same(a, b):
    grads_a, metrics_a = a
    grads_b, metrics_b = b
    for k in grads_b:
        assert torch.equal(grads_a[k], grads_b[k]), k
    for k in metrics_b:
        assert torch.equal(metrics_a[k], metrics_b[k]), k


def test_lambda_zero_is_maml_exactly_for_regression():
    family = ml.SinusoidTasks()
    batch = family.sample(6, generator=ml.make_generator(3))
    model = ml.MLP((1, 40, 40, 1))
    params = model.init(0)
    maml = ml.MAML(model, alpha=0.01, inner_steps=2).meta_gradient(params, batch)
    for measure in MEASURES:
        taml = ml.TAMLInequality(model, alpha=0.01, inner_steps=2, lam=0.0, measure=measure)
        _assert_same(taml.meta_gradient(params, batch), maml)
    # and λ > 0 does change it
    taml = ml.TAMLInequality(model, alpha=0.01, inner_steps=2, lam=0.5).meta_gradient(params, batch)
    assert not torch.equal(taml[0]["0.weight"], maml[0]["0.weight"])


def test_lambda_zero_is_maml_exactly_for_classification():
    batch = _classification_batch()
    model = ml.MLP((2, 8, 3))
    params = model.init(0, dtype=F64)
    loss = ml.TAMLEntropy(model).loss
    maml = ml.MAML(model, alpha=0.3, inner_steps=1, loss=loss).meta_gradient(params, batch)
    _assert_same(ml.TAMLEntropy(model, alpha=0.3, inner_steps=1, lam=0.0).meta_gradient(params, batch), maml)
    _assert_same(ml.TAMLInequality(model, alpha=0.3, inner_steps=1, lam=0.0, loss=loss).meta_gradient(params, batch),
                 maml)


def test_meta_sgd_and_learned_update_start_as_maml():
    family = ml.SinusoidTasks()
    batch = family.sample(5, generator=ml.make_generator(1))
    model = ml.MLP((1, 40, 40, 1))
    maml = ml.MAML(model, alpha=0.01, inner_steps=2)
    g_maml, m_maml = maml.meta_gradient(model.init(0), batch)
    for learner in (ml.MetaSGD(model, alpha=0.01, inner_steps=2), ml.LearnedUpdate(model, alpha=0.01, inner_steps=2)):
        params = learner.model.init(0)
        assert {k: params[k] for k in g_maml}.keys() == g_maml.keys()
        grads, metrics = learner.meta_gradient(params, batch)
        for k in g_maml:
            torch.testing.assert_close(grads[k], g_maml[k], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(metrics["loss"], m_maml["loss"], rtol=1e-6, atol=1e-8)
        extra = [k for k in grads if k not in g_maml]
        # the meta-parameters get a gradient from the start (for the update network: its output layer; the
        # hidden layer's gradient passes through the zero output weights, so it is 0 at the very first step)
        moving = [k for k in extra if not k.startswith(("update.w1", "update.b1"))]
        assert moving and all(float(grads[k].abs().max()) > 0 for k in moving), learner.name


def test_learned_update_direction_gradient_against_finite_differences():
    batch = _regression_batch(n_tasks=2)
    learner = ml.LearnedUpdate(ml.MLP((2, 1)), alpha=0.05, inner_steps=2, hidden=3)
    params = learner.model.init(0, dtype=F64)
    params["update.w2"] = torch.tensor([0.3, -0.2, 0.5], dtype=F64)        # a non-trivial correction
    params["update.b2"] = torch.tensor(0.1, dtype=F64)
    grads, _ = learner.meta_gradient(params, batch)

    def direction(u, g, p):
        rms = np.sqrt((g * g).mean() + 1e-12)
        feats = np.stack([g / rms, np.full_like(g, 0.25 * np.log(rms)), p], -1)
        return rms * (np.tanh(feats @ u["update.w1"].T + u["update.b1"]) @ u["update.w2"] + u["update.b2"])

    def objective(p):
        total = 0.0
        for t in range(batch.n_tasks):
            xs, ys = batch.x_support[t].numpy(), batch.y_support[t].numpy()
            w, b = p["0.weight"], p["0.bias"]
            for _ in range(2):
                r = xs @ w.T + b - ys
                gw, gb = 2 * r.T @ xs / len(xs), 2 * r.mean(0)
                w, b = (w - 0.05 * gw + 0.05 * direction(p, gw, w), b - 0.05 * gb + 0.05 * direction(p, gb, b))
            total += _np_mse(w, b, batch.x_query[t].numpy(), batch.y_query[t].numpy())
        return total / batch.n_tasks

    fd = _np_fd_grad(objective, _np_params(params))
    for k in params:
        np.testing.assert_allclose(grads[k].numpy(), fd[k], rtol=1e-5, atol=1e-8)


def test_meta_sgd_test_time_alpha_scales_the_learned_rates():
    model = ml.MLP((1, 10, 1))
    learner = ml.MetaSGD(model, alpha=0.01)
    params = learner.model.init(0)
    params = {k: (v * 3 if k.startswith("lr.") else v) for k, v in params.items()}   # rates 0.03
    x, y = torch.randn(5, 1), torch.randn(5, 1)
    plain = ml.MAML(model, alpha=0.03).adapt(learner.model.split(params)[0], x, y)
    adapted = learner.adapt(params, x, y)
    for k in plain:
        torch.testing.assert_close(adapted[k], plain[k])
    halved = learner.adapt(params, x, y, alpha=0.005)                          # scale 1/2: rates 0.015
    plain_half = ml.MAML(model, alpha=0.015).adapt(learner.model.split(params)[0], x, y)
    for k in plain_half:
        torch.testing.assert_close(halved[k], plain_half[k])
    assert set(learner.rates(params)) == set(model.param_shapes())


def test_meta_training_learns_the_rates_and_checkpoints_round_trip(tmp_path):
    family = ml.SinusoidTasks()
    learner = ml.MetaSGD(ml.MLP((1, 20, 1)), alpha=0.01)
    result = ml.meta_train(learner, family, budget="quick", iterations=30, progress=False,
                           checkpoint=tmp_path / "metasgd.pt")
    rates = learner.rates(result.params)
    assert any(float((r - 0.01).abs().max()) > 1e-3 for r in rates.values())
    params, _ = ml.load_params(tmp_path / "metasgd.pt", learner)
    assert set(params) == set(result.params)
    with pytest.raises(ml.CheckpointError, match="Meta-SGD learning rates"):
        ml.load_checkpoint(tmp_path / "metasgd.pt", ml.MLP((1, 20, 1)))
    with pytest.raises(ml.CheckpointError):
        ml.load_checkpoint(tmp_path / "metasgd.pt", ml.LearnedUpdate(ml.MLP((1, 20, 1))).model)


def test_adaptation_curve_works_for_every_new_learner():
    family = ml.SinusoidTasks()
    for learner in (ml.TAMLInequality(ml.MLP((1, 20, 1)), measure="gini"), ml.MetaSGD(ml.MLP((1, 20, 1))),
                    ml.LearnedUpdate(ml.MLP((1, 20, 1)))):
        curve = ml.adaptation_curve(learner, learner.model.init(0), family, steps=3, n_tasks=10)
        assert curve.mean.shape == (4,) and np.isfinite(curve.mean).all()
        assert curve.mean[3] < curve.mean[0]


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build,match", [
    (lambda m: ml.TAMLInequality(m, lam=-0.1), "λ"),
    (lambda m: ml.TAMLInequality(m, lam=float("nan")), "λ"),
    (lambda m: ml.TAMLEntropy(m, lam=-1.0), "λ"),
    (lambda m: ml.TAMLInequality(m, measure="entropy"), "unknown inequality measure"),
    (lambda m: ml.TAMLInequality(m, measure="ge", ge_alpha=float("inf")), "GE parameter"),
    (lambda m: ml.TAMLInequality(m, measure="atkinson", atkinson_epsilon=-1), "Atkinson parameter"),
    (lambda m: ml.TAMLEntropy(m, loss=ml.mse_loss), "needs a classifier"),
    (lambda m: ml.MetaSGD(m, alpha=0.0), "α"),
    (lambda m: ml.LearnedUpdate(m, gamma=-1.0), "γ"),
])
def test_bad_hyperparameters(build, match):
    with pytest.raises(ml.ConfigError, match=match):
        build(ml.MLP((1, 10, 1)))


def test_entropy_taml_refuses_regression_tasks():
    learner = ml.TAMLEntropy(ml.MLP((1, 10, 1)))
    batch = ml.SinusoidTasks().sample(2, generator=ml.make_generator(0))
    with pytest.raises(ml.ConfigError, match="TAMLInequality for regression"):
        learner.meta_gradient(learner.model.init(0), batch)


def test_meta_parameters_cannot_be_named_trainable():
    learner = ml.MetaSGD(ml.MLP((1, 10, 1)))
    params = learner.model.init(0)
    x, y = torch.randn(4, 1), torch.randn(4, 1)
    adapted = learner.adapt(params, x, y, trainable=["2.bias"])
    assert torch.equal(adapted["0.weight"], params["0.weight"]) and not torch.equal(adapted["2.bias"], params["2.bias"])
    with pytest.raises(ml.ConfigError, match="network's parameters"):
        learner.adapt(params, x, y, trainable=["lr.2.bias"])


def test_make_learner_knows_the_new_names():
    model = ml.MLP((1, 10, 1))
    assert isinstance(ml.make_learner("taml-inequality", model, measure="gini"), ml.TAMLInequality)
    assert isinstance(ml.make_learner("Meta-SGD", model), ml.MetaSGD)
    assert isinstance(ml.make_learner("learned_update", model), ml.LearnedUpdate)
    assert isinstance(ml.make_learner("TAML-entropy", ml.MLP((2, 3)), loss=ml.TAMLEntropy(ml.MLP((2, 3))).loss),
                      ml.TAMLEntropy)
