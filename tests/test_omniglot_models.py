"""Conv4, ProtoNets and the Omniglot path through training and evaluation.

Every test is small: Conv4 with 4 or 8 filters, a few episodes with a few query drawings, built from the
archives shipped in data/omniglot (preprocessed once per module into a temporary cache) or from synthetic
tensors.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn_core as ml
from metalearn_core import data
from metalearn_core.errors import ConfigError, ShapeMismatchError
from metalearn_core.evaluation import adaptation_losses, query_score
from metalearn_core.models import batch_stat_norm
from metalearn_core.omniglot import OmniglotTasks, accuracy

REPO_DATA = Path(ml.__file__).resolve().parent.parent / "data" / "omniglot"
F64 = torch.float64
ALGORITHMS = ("maml", "fomaml", "reptile", "protonet")


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these small convolutions gain nothing from two, and on a machine shared with other
    jobs two threads can wait on each other for seconds per call."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return data.load_omniglot(data_dir=REPO_DATA, cache_dir=tmp_path_factory.mktemp("omniglot_cache"))


@pytest.fixture(scope="module")
def train5(images):
    return OmniglotTasks(images, "train", ways=5)


@pytest.fixture(scope="module")
def test5(images):
    return OmniglotTasks(images, "test", ways=5)


def make(name, model, family, **kw):
    """A learner with the family's loss; α=0.4 and one step as in the MAML paper's 5-way Omniglot runs."""
    if name == "protonet":
        return ml.make_learner(name, model, **kw)
    return ml.make_learner(name, model, alpha=0.4, inner_steps=1, loss=family.loss, **kw)


# ---- Conv4 ----------------------------------------------------------------------------------------------------

def test_conv4_shapes_names_and_init():
    net = ml.Conv4(ways=5, width=8)
    params = net.init(0)
    x = torch.rand(10, 1, 28, 28)
    assert net(params, x).shape == (10, 5)
    assert net.embed(params, x).shape == (10, 8) == (10, net.embedding_size)     # 28 -> 14 -> 7 -> 3 -> 1
    assert net.in_features == (1, 28, 28) and net.out_features == 5
    assert set(params) == {f"blocks.{i}.{m}.{w}" for i in range(4) for m in ("conv", "norm") for w in ("weight", "bias")
                           } | {"head.weight", "head.bias"}
    assert params["blocks.0.conv.weight"].shape == (8, 1, 3, 3) and params["head.weight"].shape == (5, 8)
    assert torch.equal(params["blocks.2.norm.weight"], torch.ones(8))
    assert torch.equal(params["blocks.2.norm.bias"], torch.zeros(8))
    again, other = net.init(0), net.init(1)
    assert all(torch.equal(params[k], again[k]) for k in params)
    assert not torch.equal(params["blocks.1.conv.weight"], other["blocks.1.conv.weight"])
    assert net.init(0, dtype=F64)["head.bias"].dtype == F64
    assert net.spec() == {"class": "Conv4", "in_channels": 1, "ways": 5, "width": 8, "image_size": 28,
                          "downsample": "maxpool"}
    headless = ml.Conv4(ways=None, width=8)
    hp = headless.init(0)
    assert "head.weight" not in hp and headless.out_features is None
    assert torch.equal(headless(hp, x), headless.embed(hp, x))
    strided = ml.Conv4(ways=5, width=8, downsample="stride")                 # 28 -> 14 -> 7 -> 4 -> 2
    assert strided.embed(strided.init(0), x).shape == (10, 8 * 2 * 2)
    big = ml.Conv4(in_channels=3, ways=5, width=4, image_size=84)             # 84 -> 42 -> 21 -> 10 -> 5
    assert big(big.init(0), torch.rand(2, 3, 84, 84)).shape == (2, 5) and big.embedding_size == 4 * 25


@pytest.mark.parametrize("shape, words", [
    ((10, 1, 32, 32), "image_size=32"),
    ((10, 3, 28, 28), "in_channels=3"),
    ((1, 28, 28), "[n, 1, 28, 28]"),
    ((2, 10, 1, 28, 28), "vmap"),
])
def test_conv4_refuses_images_of_another_shape(shape, words):
    net = ml.Conv4(ways=5, width=4)
    with pytest.raises(ShapeMismatchError) as e:
        net(net.init(0), torch.rand(*shape))
    assert words in one_line(e)


@pytest.mark.parametrize("kwargs, words", [
    ({"image_size": 8}, "at least 16x16"),
    ({"width": 0}, "width"),
    ({"ways": 1}, "ways"),
    ({"downsample": "avgpool"}, "downsample"),
])
def test_conv4_bad_settings(kwargs, words):
    with pytest.raises(ConfigError) as e:
        ml.Conv4(**kwargs)
    assert words in one_line(e)


def test_batch_stat_norm_is_torchs_batch_norm_in_training_mode():
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(6, 4, 5, 5, generator=g, dtype=F64)
    w, b = torch.rand(4, generator=g, dtype=F64), torch.rand(4, generator=g, dtype=F64)
    torch.testing.assert_close(batch_stat_norm(x, w, b), F.batch_norm(x, None, None, w, b, training=True))
    z = batch_stat_norm(x, torch.ones(4, dtype=F64), torch.zeros(4, dtype=F64))
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(4, dtype=F64))
    torch.testing.assert_close(z.var((0, 2, 3), unbiased=False), torch.ones(4, dtype=F64), rtol=1e-4, atol=1e-4)


def test_conv4_is_four_blocks_of_conv_batchnorm_relu_maxpool_and_a_linear_head():
    net = ml.Conv4(ways=5, width=6)
    params = net.init(3, dtype=F64)
    params = {k: v + 0.1 * torch.randn(v.shape, dtype=F64, generator=torch.Generator().manual_seed(i))
              for i, (k, v) in enumerate(params.items())}                   # γ, β away from 1, 0 too
    x = torch.rand(7, 1, 28, 28, dtype=F64, generator=torch.Generator().manual_seed(0))
    h = x
    for i in range(4):
        h = F.conv2d(h, params[f"blocks.{i}.conv.weight"], params[f"blocks.{i}.conv.bias"], padding=1)
        h = batch_stat_norm(h, params[f"blocks.{i}.norm.weight"], params[f"blocks.{i}.norm.bias"])
        h = F.max_pool2d(torch.relu(h), 2)
    z = h.flatten(1)
    torch.testing.assert_close(net.embed(params, x), z)
    torch.testing.assert_close(net(params, x), z @ params["head.weight"].T + params["head.bias"])


def test_batch_norm_uses_the_statistics_of_the_batch_it_is_given():
    net = ml.Conv4(ways=5, width=8)
    params = net.init(0)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    others = x.clone()
    others[1:] = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    # the same first image, different company: a different output (no running statistics)
    assert not torch.allclose(net(params, x)[0], net(params, others)[0], atol=1e-4)
    # the batch's own statistics, whatever happened before: calling twice gives the same numbers
    torch.testing.assert_close(net(params, x), net(params, x), rtol=0, atol=0)


# ---- transductive vs non-transductive prediction ------------------------------------------------------------

@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_non_transductive_predictions_do_not_let_query_examples_influence_each_other(train5, name):
    learner = make(name, ml.Conv4(ways=5, width=8), train5)
    params = learner.model.init(0)
    b = train5.sample(1, shots=1, queries=2, seed=3)
    xs, ys, xq = b.x_support[0], b.y_support[0], b.x_query[0]
    changed = xq.clone()
    changed[3] = 1 - changed[3]                                       # one query drawing inverted
    alone = learner.predict(params, xs, ys, xq, transductive=False)
    alone_changed = learner.predict(params, xs, ys, changed, transductive=False)
    keep = torch.arange(xq.shape[0]) != 3
    torch.testing.assert_close(alone[keep], alone_changed[keep], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone[3], alone_changed[3], atol=1e-3)
    together = learner.predict(params, xs, ys, xq, transductive=True)
    together_changed = learner.predict(params, xs, ys, changed, transductive=True)
    assert not torch.allclose(together[keep], together_changed[keep], atol=1e-4)   # the pitfall
    # the definition: each query example predicted by one pass over the support set plus that example
    for i in (0, 7):
        one = learner.predict(params, xs, ys, xq[i:i + 1], transductive=True)[0]
        if name == "maml":
            one = learner.model(params, torch.cat([xs, xq[i:i + 1]]))[-1]
        torch.testing.assert_close(alone[i], one, rtol=1e-5, atol=1e-5)


def test_one_query_at_a_time_gives_the_same_predictions_in_any_chunks(train5, monkeypatch):
    """Queries predicted alone go through the network a few at a time (to keep activations small): the chunk
    size changes no prediction."""
    learner = make("protonet", ml.Conv4(ways=5, width=8), train5)
    params = learner.model.init(0)
    b = train5.sample(1, shots=1, queries=3, seed=4)
    args = (params, b.x_support[0], b.y_support[0], b.x_query[0])
    whole = learner.predict(*args, transductive=False)                 # 64 images: all 15 queries at once
    monkeypatch.setattr(ml.algorithms, "NT_IMAGES_PER_CHUNK", 12)       # 2 queries (with 5 support) a pass
    torch.testing.assert_close(learner.predict(*args, transductive=False), whole, rtol=1e-5, atol=1e-5)


def test_learners_choose_vmap_or_a_loop_from_the_model_unless_told():
    x = torch.zeros(2, 3, 1)
    assert ml.MAML(ml.MLP((1, 4, 1))).uses_vmap(x)
    assert not ml.MAML(ml.Conv4(width=4)).uses_vmap(x)
    assert ml.MAML(ml.Conv4(width=4), vectorize=True).uses_vmap(x)
    assert not ml.MAML(ml.MLP((1, 4, 1)), vectorize=False).uses_vmap(x)


def test_without_batch_statistics_both_protocols_agree():
    learner = ml.MAML(ml.MLP((1, 8, 1)), alpha=0.1)
    params = learner.model.init(0)
    b = ml.SinusoidTasks().sample(1, seed=0)
    args = (params, b.x_support[0], b.y_support[0], b.x_query[0])
    torch.testing.assert_close(learner.predict(*args, transductive=False), learner.predict(*args))


# ---- meta-gradients ------------------------------------------------------------------------------------------

def test_maml_meta_gradient_on_conv4_matches_central_finite_differences(images):
    family = OmniglotTasks(images, "train", ways=3)
    learner = ml.MAML(ml.Conv4(ways=3, width=4), alpha=0.4, loss=family.loss)
    params = learner.model.init(0, dtype=F64)
    batch = family.sample(2, shots=1, queries=2, seed=5, dtype=F64)
    grads, _ = learner.meta_gradient(params, batch)

    def objective(p):
        total = 0.0
        for i in range(batch.n_tasks):
            adapted = learner.adapt(p, batch.x_support[i], batch.y_support[i])
            total = total + learner.task_loss(adapted, batch.x_query[i], batch.y_query[i])
        return float(total / batch.n_tasks)

    eps = 1e-6
    for name, index in (("blocks.0.conv.weight", (1, 0, 1, 1)), ("blocks.2.norm.weight", (2,)),
                        ("blocks.3.conv.bias", (0,)), ("head.weight", (1, 3))):
        plus = {k: v.clone() for k, v in params.items()}
        minus = {k: v.clone() for k, v in params.items()}
        plus[name][index] += eps
        minus[name][index] -= eps
        fd = (objective(plus) - objective(minus)) / (2 * eps)
        assert grads[name][index].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), name
    # the second-order term is really there: first-order MAML differs
    fo, _ = ml.FOMAML(learner.model, alpha=0.4, loss=family.loss).meta_gradient(params, batch)
    assert not torch.allclose(fo["blocks.0.conv.weight"], grads["blocks.0.conv.weight"], rtol=1e-3)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_vmap_and_loop_agree_on_an_omniglot_batch(train5, name):
    learner = make(name, ml.Conv4(ways=5, width=8), train5)
    params = learner.model.init(0, dtype=F64)
    batch = train5.sample(3, shots=1, queries=2, seed=1, dtype=F64)
    assert not learner.uses_vmap(batch.x_support)          # Conv4 on a CPU: a loop is the faster default
    learner.vectorize = True
    g1, m1 = learner.meta_gradient(params, batch)
    learner.vectorize = False
    g2, m2 = learner.meta_gradient(params, batch)
    for k in params:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11)
    for k in m1:
        torch.testing.assert_close(m1[k], m2[k], rtol=1e-9, atol=1e-11)


# ---- ProtoNets -----------------------------------------------------------------------------------------------

def test_protonet_logits_are_negative_squared_distances_to_class_means(train5):
    learner = ml.ProtoNet(ml.Conv4(ways=5, width=8))
    params = learner.model.init(2)
    b = train5.sample(1, shots=3, queries=2, seed=4)
    xs, ys, xq = b.x_support[0], b.y_support[0], b.x_query[0]
    logits = learner.predict(params, xs, ys, xq)
    z = learner.model.embed(params, torch.cat([xs, xq]))            # support and query in one pass
    zs, zq = z[:15], z[15:]
    for q in range(xq.shape[0]):
        for c in range(5):
            mean = torch.stack([zs[i] for i in range(15) if ys[i] == c]).mean(0)
            expected = -sum((zq[q, j] - mean[j]) ** 2 for j in range(zq.shape[1]))
            assert logits[q, c].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)


class FlattenEmbedding(ml.FunctionalModel):
    """The identity embedding (an image's pixels as a vector), with no parameters."""

    def __init__(self, size=4):
        self.module = nn.Flatten()
        self.in_features = (1, size, size)
        self.out_features = None

    def embed(self, params, x):
        return self.module(x)

    def spec(self):
        return {"class": "FlattenEmbedding"}


def test_protonet_with_the_identity_embedding_solves_a_separable_episode():
    g = torch.Generator().manual_seed(0)
    patterns = torch.eye(16).reshape(16, 1, 4, 4)[[0, 5, 10]] * 3               # three distinct pixels lit
    shots, queries = 2, 4
    xs = patterns.repeat_interleave(shots, 0) + 0.2 * torch.rand(3 * shots, 1, 4, 4, generator=g)
    xq = patterns.repeat_interleave(queries, 0) + 0.2 * torch.rand(3 * queries, 1, 4, 4, generator=g)
    ys, yq = torch.arange(3).repeat_interleave(shots), torch.arange(3).repeat_interleave(queries)
    batch = ml.TaskBatch(xs[None], ys[None], xq[None], yq[None])
    learner = ml.ProtoNet(FlattenEmbedding(), ways=3)
    acc = adaptation_losses(learner, {}, batch, steps=0, score=accuracy)
    assert acc.shape == (1, 1) and acc.item() == 1.0
    assert adaptation_losses(learner, {}, batch, steps=0).item() < 0.01       # confident too
    shuffled = ml.TaskBatch(xs[None], ys.roll(shots)[None], xq[None], yq[None])   # support labels permuted
    assert adaptation_losses(learner, {}, shuffled, steps=0, score=accuracy).item() == 0.0


def test_protonet_settings_and_interface(train5):
    net = ml.Conv4(ways=5, width=4)
    assert isinstance(ml.make_learner("ProtoNet", net), ml.ProtoNet) and ml.ALGORITHMS["protonet"] is ml.ProtoNet
    learner = ml.ProtoNet(net)
    assert learner.ways == 5 and "ProtoNet" in learner.describe() and learner.hyperparameters()["ways"] == 5
    params = net.init(0)
    b = train5.sample(1, seed=0)
    assert learner.adapt(params, b.x_support[0], b.y_support[0], steps=3) is params
    with pytest.raises(ConfigError, match="embed"):
        ml.ProtoNet(ml.MLP((1, 4, 1)))
    with pytest.raises(ConfigError, match="inner loop"):
        ml.ProtoNet(net, inner_steps=1)
    with pytest.raises(ConfigError, match="ways=N"):
        ml.ProtoNet(ml.Conv4(ways=None, width=4))
    three = ml.ProtoNet(ml.Conv4(ways=None, width=4), ways=3)            # an embedding serves any N
    small = OmniglotTasks(train5.images, "train", ways=3).sample(2, shots=2, queries=1, seed=0)
    grads, metrics = three.meta_gradient(three.model.init(0), small)
    assert math.isfinite(metrics["loss"].item()) and set(grads) == set(three.model.init(0))
    with pytest.raises(ShapeMismatchError) as e:
        three.meta_gradient(three.model.init(0), train5.sample(2, seed=0))
    assert "ways=5" in one_line(e)


# ---- training and evaluation on Omniglot ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ALGORITHMS + ("joint",))
def test_meta_train_runs_each_algorithm_on_5way_1shot_omniglot(train5, name):
    quick = ml.preset("omniglot", "quick")
    net = ml.Conv4(ways=5, width=quick.width)
    learner = (ml.JointTraining(net, alpha=0.4, loss=train5.loss) if name == "joint" else make(name, net, train5))
    result = ml.meta_train(learner, train5, budget="quick", iterations=3, progress=False, device="cpu")
    assert result.history.steps_done == 3 and result.config.meta_batch == quick.meta_batch
    assert all(math.isfinite(v) for vs in result.history.metrics.values() for v in vs)
    start = net.init(0)
    assert any(not torch.equal(start[k], result.params[k]) for k in start)


@pytest.mark.parametrize("transductive", [True, False])
def test_adaptation_curve_on_omniglot_records_query_accuracy(train5, test5, transductive):
    learner = make("maml", ml.Conv4(ways=5, width=4), train5)
    params = learner.model.init(0)
    curve = ml.adaptation_curve(learner, params, test5, steps=2, n_tasks=6, transductive=transductive)
    assert curve.metric == "accuracy" and curve.losses.shape == (6, 3) and curve.transductive is transductive
    assert ((curve.losses >= 0) & (curve.losses <= 1)).all()
    # 15 query drawings per class by default (eval_queries): accuracies are multiples of 1/75
    assert abs(curve.losses * 75 - (curve.losses * 75).round()).max() < 1e-4
    # the same numbers by hand for the first test task
    g = ml.make_generator(ml.evaluation.TEST_SEED_OFFSET + 0)
    b = test5.sample(6, shots=1, queries=15, generator=g)
    p = params
    for s in range(3):
        pred = learner.predict(p, b.x_support[0], b.y_support[0], b.x_query[0], transductive=transductive)
        assert curve.losses[0, s] == pytest.approx(accuracy(pred, b.y_query[0]).item(), abs=1e-6)
        p = learner.inner_step(p, b.x_support[0], b.y_support[0])


def test_protonet_curve_is_flat_and_regression_keeps_recording_the_loss(test5):
    learner = ml.ProtoNet(ml.Conv4(ways=5, width=4))
    curve = ml.adaptation_curve(learner, learner.model.init(0), test5, steps=2, n_tasks=4)
    assert curve.metric == "accuracy" and (curve.losses == curve.losses[:, :1]).all()
    assert query_score(test5) is accuracy and query_score(ml.SinusoidTasks()) is None


# ---- input checks ---------------------------------------------------------------------------------------------

def _batch_with(batch, **changes):
    fields = dict(x_support=batch.x_support, y_support=batch.y_support, x_query=batch.x_query, y_query=batch.y_query)
    fields.update(changes)
    return ml.TaskBatch(**fields)


@pytest.mark.parametrize("change, words", [
    (lambda b: {"y_support": b.y_support.float()}, "y.long()"),
    (lambda b: {"y_support": b.y_support.int()}, "int64"),
    (lambda b: {"y_support": b.y_support + 1}, "ways=6"),
    (lambda b: {"y_query": b.y_query + 1}, "query set"),
    (lambda b: {"y_support": b.y_support - 1}, "negative"),
    (lambda b: {"y_support": b.y_support[..., None]}, "one integer label per example"),
    (lambda b: {"x_support": b.x_support[..., :27, :27], "x_query": b.x_query[..., :27, :27]}, "image_size=27"),
    (lambda b: {"x_support": b.x_support.expand(-1, -1, 3, -1, -1)}, "in_channels=3"),
])
def test_check_input_errors_on_omniglot_batches(train5, change, words):
    learner = make("maml", ml.Conv4(ways=5, width=4), train5)
    b = train5.sample(2, shots=1, queries=1, seed=0)
    bad = _batch_with(b, **change(b))
    with pytest.raises(ShapeMismatchError) as e:
        learner.meta_gradient(learner.model.init(0), bad)
    assert words in one_line(e)


def test_a_model_for_another_number_of_ways_is_refused_by_meta_train(images):
    family = OmniglotTasks(images, "train", ways=3)
    learner = make("maml", ml.Conv4(ways=5, width=4), family)
    with pytest.raises(ShapeMismatchError) as e:
        ml.meta_train(learner, family, budget="quick", iterations=1, progress=False)
    assert "ways=3" in one_line(e)


def test_omniglot_budget_presets():
    quick, cpu, full = (ml.preset("omniglot", b) for b in ml.BUDGETS)
    assert (full.iterations, full.meta_batch, full.outer_lr, full.width) == (60_000, 32, 1e-3, 64)
    assert quick.iterations < cpu.iterations < full.iterations and quick.width < cpu.width == full.width == 64
    assert ml.preset("omniglot_20way", "full").meta_batch == 16
    # the papers' budgets at full: Reptile 100,000 / 200,000 iterations of 5 episodes
    assert (ml.preset("omniglot_reptile", "full").iterations, ml.preset("omniglot_reptile20", "full").iterations) == \
        (100_000, 200_000)
    assert ml.preset("sinusoid", "cpu").width is None


def test_class_labels_with_the_default_mean_squared_error_are_refused(train5):
    learner = ml.MAML(ml.Conv4(ways=5, width=4), alpha=0.4)                  # loss=family.loss forgotten
    with pytest.raises(ConfigError) as e:
        learner.meta_gradient(learner.model.init(0), train5.sample(2, seed=0))
    assert "loss=family.loss" in one_line(e)
