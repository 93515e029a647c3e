"""The maths: meta-gradients against finite differences, closed forms and each other."""

import pytest
import torch
from torch.func import grad

import metalearn_core as ml

F64 = torch.float64


def _flat(params):
    return torch.cat([v.reshape(-1) for v in params.values()])


def _meta_objective(learner, params, batch, first_order=False):
    """J(θ) = mean_T L^q_T(θ'_T), computed task by task with the learner's own inner loop."""
    total = 0.0
    for i in range(batch.n_tasks):
        adapted = learner.adapt(params, batch.x_support[i], batch.y_support[i], first_order=first_order)
        total = total + learner.task_loss(adapted, batch.x_query[i], batch.y_query[i])
    return total / batch.n_tasks


def _finite_difference_grad(fn, params, eps=1e-6):
    out = {}
    for k, v in params.items():
        g = torch.zeros_like(v)
        flat = g.view(-1)
        for j in range(v.numel()):
            plus = {kk: vv.clone() for kk, vv in params.items()}
            minus = {kk: vv.clone() for kk, vv in params.items()}
            plus[k].view(-1)[j] += eps
            minus[k].view(-1)[j] -= eps
            flat[j] = (fn(plus) - fn(minus)) / (2 * eps)
        out[k] = g
    return out


def _rel_err(a, b):
    a, b = _flat(a), _flat(b)
    return float((a - b).norm() / b.norm())


@pytest.fixture
def sine_setup():
    family = ml.SinusoidTasks()
    model = ml.MLP((1, 8, 8, 1), activation="tanh")  # smooth, so finite differences are accurate
    params = model.init(seed=3, dtype=F64)
    batch = family.sample(4, shots=5, queries=7, seed=11, dtype=F64)
    return family, model, params, batch


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_matches_central_finite_differences(sine_setup, steps):
    _, model, params, batch = sine_setup
    learner = ml.MAML(model, alpha=0.05, inner_steps=steps)
    g, metrics = learner.meta_gradient(params, batch)
    fd = _finite_difference_grad(lambda p: _meta_objective(learner, p, batch).item(), params)
    assert _rel_err(g, fd) < 1e-4
    assert metrics["loss"].item() == pytest.approx(_meta_objective(learner, params, batch).item(), rel=1e-10)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_closed_form_on_quadratic(steps, first_order):
    family = ml.QuadraticTasks()
    batch = family.sample(16, seed=5, dtype=F64)
    theta = torch.tensor([-0.7, 2.1], dtype=F64)
    cls = ml.FOMAML if first_order else ml.MAML
    learner = cls(ml.LinearModel(2), alpha=0.1, inner_steps=steps)
    g, _ = learner.meta_gradient({"w": theta}, batch)
    expected = family.meta_gradient(theta, batch, 0.1, steps, first_order=first_order)
    torch.testing.assert_close(g["w"], expected, rtol=1e-10, atol=1e-12)


def test_closed_form_differs_between_maml_and_fomaml():
    """Guards the test above against a closed form that ignores ``first_order``."""
    family = ml.QuadraticTasks()
    batch = family.sample(16, seed=5, dtype=F64)
    theta = torch.tensor([-0.7, 2.1], dtype=F64)
    a = family.meta_gradient(theta, batch, 0.1, 1)
    b = family.meta_gradient(theta, batch, 0.1, 1, first_order=True)
    assert (a - b).norm() > 1e-2 * a.norm()


def test_one_step_maml_minus_fomaml_is_the_hessian_term():
    """k=1: ∇J_MAML − ∇J_FOMAML = −α H_s ∇L^q(θ') for each task (the Hessian term), averaged."""
    family = ml.QuadraticTasks()
    batch = family.sample(8, seed=2, dtype=F64)
    theta = torch.tensor([0.4, -1.0], dtype=F64)
    model, alpha = ml.LinearModel(2), 0.15
    g_maml, _ = ml.MAML(model, alpha=alpha).meta_gradient({"w": theta}, batch)
    g_fo, _ = ml.FOMAML(model, alpha=alpha).meta_gradient({"w": theta}, batch)
    hs = family.hessian(batch.x_support)
    adapted = family.adapted(theta, batch, alpha, 1)
    gq = (family.hessian(batch.x_query) @ (adapted - batch.info["w"])[:, :, None])
    hessian_term = (-alpha * hs @ gq)[:, :, 0].mean(0)
    torch.testing.assert_close(g_maml["w"] - g_fo["w"], hessian_term, rtol=1e-10, atol=1e-12)


def test_fomaml_is_query_gradient_at_adapted_params(sine_setup):
    _, model, params, batch = sine_setup
    learner = ml.FOMAML(model, alpha=0.05, inner_steps=2)
    g, _ = learner.meta_gradient(params, batch)
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(batch.n_tasks):
        adapted = learner.adapt(params, batch.x_support[i], batch.y_support[i])
        adapted = {k: v.detach() for k, v in adapted.items()}
        gq = grad(learner.task_loss)(adapted, batch.x_query[i], batch.y_query[i])
        for k in expected:
            expected[k] += gq[k] / batch.n_tasks
    assert _rel_err(g, expected) < 1e-10


def test_second_order_term_is_present_on_mlp(sine_setup):
    _, model, params, batch = sine_setup
    g2, _ = ml.MAML(model, alpha=0.05).meta_gradient(params, batch)
    g1, _ = ml.FOMAML(model, alpha=0.05).meta_gradient(params, batch)
    assert _rel_err(g1, g2) > 1e-3


def test_maml_matches_plain_autograd_with_create_graph(sine_setup):
    """An independent implementation: torch.autograd.grad(create_graph=True), one task at a time."""
    _, model, params, batch = sine_setup
    alpha, steps = 0.05, 2
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    total = 0.0
    for i in range(batch.n_tasks):
        p = dict(leaf)
        for _ in range(steps):
            loss = ((model(p, batch.x_support[i]) - batch.y_support[i]) ** 2).mean()
            gs = torch.autograd.grad(loss, list(p.values()), create_graph=True)
            p = {k: v - alpha * g for (k, v), g in zip(p.items(), gs)}
        total = total + ((model(p, batch.x_query[i]) - batch.y_query[i]) ** 2).mean()
    expected = dict(zip(leaf, torch.autograd.grad(total / batch.n_tasks, list(leaf.values()))))
    g, _ = ml.MAML(model, alpha=alpha, inner_steps=steps).meta_gradient(params, batch)
    assert _rel_err(g, expected) < 1e-10


def test_reptile_one_step_is_alpha_times_joint_training_gradient(sine_setup):
    _, model, params, batch = sine_setup
    alpha = 0.05
    g_rep, _ = ml.Reptile(model, alpha=alpha, inner_steps=1).meta_gradient(params, batch)
    g_joint, _ = ml.JointTraining(model).meta_gradient(params, batch)
    assert _rel_err(g_rep, {k: alpha * v for k, v in g_joint.items()}) < 1e-10


@pytest.mark.parametrize("steps", [1, 4])
def test_reptile_matches_closed_form_on_quadratic(steps):
    """φ − φ̃ = (I − (I − αH)^k)(φ − w) with H the Hessian of all of the task's data."""
    family = ml.QuadraticTasks()
    batch = family.sample(6, seed=9, dtype=F64)
    phi, alpha = torch.tensor([1.5, -0.5], dtype=F64), 0.1
    g, _ = ml.Reptile(ml.LinearModel(2), alpha=alpha, inner_steps=steps).meta_gradient({"w": phi}, batch)
    x, _ = batch.all_data()
    p = family.inner_map(x, alpha, steps)
    eye = torch.eye(2, dtype=F64)
    expected = ((eye - p) @ (phi - batch.info["w"])[:, :, None])[:, :, 0].mean(0)
    torch.testing.assert_close(g["w"], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "joint"])
def test_vmap_and_per_task_loop_agree(sine_setup, name):
    _, model, params, batch = sine_setup
    fast = ml.make_learner(name, model, alpha=0.05, inner_steps=2 if name != "joint" else 0)
    slow = ml.make_learner(name, model, alpha=0.05, inner_steps=2 if name != "joint" else 0, vectorize=False)
    g1, m1 = fast.meta_gradient(params, batch)
    g2, m2 = slow.meta_gradient(params, batch)
    assert _rel_err(g1, g2) < 1e-10
    for k in m1:
        assert m1[k].item() == pytest.approx(m2[k].item(), rel=1e-10)


def test_closed_form_adapted_params_match_the_inner_loop():
    family = ml.QuadraticTasks()
    batch = family.sample(5, seed=1, dtype=F64)
    theta = torch.tensor([0.0, 3.0], dtype=F64)
    learner = ml.MAML(ml.LinearModel(2), alpha=0.2, inner_steps=3)
    for i in range(5):
        adapted = learner.adapt({"w": theta}, batch.x_support[i], batch.y_support[i])
        torch.testing.assert_close(adapted["w"], family.adapted(theta, batch, 0.2, 3)[i])


def test_maml_training_reaches_the_closed_form_optimum():
    """Meta-training on the toy converges to the minimiser of the MAML objective, not the joint one."""
    family = ml.QuadraticTasks()
    alpha, steps = 0.1, 1
    many = family.sample(20000, seed=4, dtype=F64)
    target = family.maml_optimum(many, alpha, steps)
    joint = family.joint_optimum(many)
    learner = ml.MAML(ml.LinearModel(2), alpha=alpha, inner_steps=steps)
    result = ml.meta_train(learner, family, iterations=1500, meta_batch=100, outer_lr=0.01, seed=0,
                           progress=False, params=learner.model.init(value=[-1.5, 3.0]))
    final = result.params["w"].double()
    assert (final - target).norm() < 0.15
    assert (final - target).norm() < 0.5 * (final - joint).norm()


def test_maml_matches_the_higher_library(sine_setup):
    """A third, independent implementation: ``higher`` (differentiable optimisers over nn.Modules)."""
    higher = pytest.importorskip("higher")
    _, model, params, batch = sine_setup
    alpha, steps = 0.05, 2
    module = model.module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    opt = torch.optim.SGD(module.parameters(), lr=alpha)
    module.zero_grad()
    for i in range(batch.n_tasks):
        with higher.innerloop_ctx(module, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(((fmodel(batch.x_support[i]) - batch.y_support[i]) ** 2).mean())
            (((fmodel(batch.x_query[i]) - batch.y_query[i]) ** 2).mean() / batch.n_tasks).backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}
    g, _ = ml.MAML(model, alpha=alpha, inner_steps=steps).meta_gradient(params, batch)
    assert _rel_err(g, expected) < 1e-8
