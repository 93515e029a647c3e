"""Transfer learning (chapter 8): the functional ResNet (stages, residual blocks, BatchNorm statistics, the
torchvision layout), fine-tuning (freezing, per-stage learning rates, BatchNorm modes, early stopping), the
cross-domain data (digits, episodes, pooled Omniglot classes), the online-only example (never online here),
checkpoint buffers, the chapter-8 exercises and the explorer / plots. Small networks and few images: fast."""

import sys
import types
import urllib.error

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn_core import exercises, viz
from metalearn_core.checkpoints import load_checkpoint, save_checkpoint
from metalearn_core.data import OmniglotImages
from metalearn_core.errors import (CheckpointError, ConfigError, DataError, DivergenceError,
                                   ShapeMismatchError)
from metalearn_core.finetune import (estimate_stats, few_shot_predict, fine_tune, linear_probe,
                                     nearest_neighbour, stage_groups)
from metalearn_core.models import ResNet
from metalearn_core.transfer import (LabelledImageTasks, OnlineOnlyError, PooledClasses, imagenet_to_cifar10,
                                     load_digits, omniglot_source, split_per_class)
from metalearn_core.widgets import FineTuneExplorer

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
SMALL = dict(blocks=(1, 1, 1, 1))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    plt.close("all")


def images(n, seed=0, channels=1, size=28):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def random_stats(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: (0.2 * torch.randn(v.shape, generator=g) if k.endswith("mean")
                else 0.5 + torch.rand(v.shape, generator=g)) for k, v in net.init_stats().items()}


def perturbed(net, seed=0):
    """Parameters with BatchNorm weights and biases moved off 1 and 0, so every tensor matters."""
    params = net.init(seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    return {k: (v + 0.1 * torch.randn(v.shape, generator=g) if ("bn" in k or "downsample.1" in k) else v)
            for k, v in params.items()}


def pretrained(classes=None, width=4, seed=0):
    net = ResNet(classes=classes, width=width, **SMALL)
    return net, perturbed(net, seed), random_stats(net, seed + 1)


def labelled(n=12, classes=3, seed=0):
    return images(n, seed), torch.arange(n) % classes


# ---- the ResNet -------------------------------------------------------------------------------------------------

def test_stage_shapes_start_and_shortcuts():
    net = ResNet(classes=5, width=8, **SMALL)
    params, stats = perturbed(net), random_stats(net)
    x = images(3)
    shapes = [[3, 1, 28, 28], [3, 8, 14, 14], [3, 8, 14, 14], [3, 16, 7, 7], [3, 32, 4, 4], [3, 64]]
    full = net(params, x, stats)
    assert list(full.shape) == [3, 5]
    for k, shape in enumerate(shapes):
        f = net.features(params, x, stats, stages=k)
        assert list(f.shape) == shape, k
        assert torch.equal(net(params, f, stats, start=k), full), k
    assert torch.equal(net.embed(params, x, stats), net.features(params, x, stats, stages=5))
    names = set(params)
    for i in (2, 3, 4):
        assert {f"layer{i}.0.downsample.0.weight", f"layer{i}.0.downsample.1.weight",
                f"layer{i}.0.downsample.1.bias"} <= names
    assert not any(n.startswith("layer1.") and "downsample" in n for n in names)
    assert "layer1.0.downsample.1.running_mean" not in stats and "layer2.0.downsample.1.running_mean" in stats
    with pytest.raises(ConfigError, match="stages must be 0..5"):
        net.features(params, x, stats, stages=6)


@pytest.mark.parametrize("fixed", [True, False])
def test_residual_block_is_identity_plus_branch(fixed):
    net = ResNet(classes=5, width=8, **SMALL)
    params = perturbed(net)
    stats = random_stats(net) if fixed else None
    x = images(3)
    stem = net.features(params, x, stats, stages=1)
    assert (stem >= 0).all()
    block = net.features(params, x, stats, stages=2)
    assert not torch.equal(block, stem)                        # the residual branch contributes
    params["layer1.0.bn2.weight"] = torch.zeros(8)
    params["layer1.0.bn2.bias"] = torch.zeros(8)
    block = net.features(params, x, stats, stages=2)
    assert torch.equal(block, F.relu(stem)) and torch.equal(block, stem)
    # with the branch scaled, the block is relu(branch + shortcut): check against the branch by hand
    params = perturbed(net)
    p, s = params, stats
    def bn(z, name):
        if s is None:
            return F.batch_norm(z, None, None, p[f"{name}.weight"], p[f"{name}.bias"], True, 0.0, 1e-5)
        return F.batch_norm(z, s[f"{name}.running_mean"], s[f"{name}.running_var"], p[f"{name}.weight"],
                            p[f"{name}.bias"], False, 0.0, 1e-5)
    h = F.relu(bn(F.conv2d(stem, p["layer1.0.conv1.weight"], padding=1), "layer1.0.bn1"))
    h = bn(F.conv2d(h, p["layer1.0.conv2.weight"], padding=1), "layer1.0.bn2")
    torch.testing.assert_close(net.features(params, x, stats, stages=2), F.relu(h + stem), rtol=1e-5, atol=1e-6)


def test_imagenet_layout_and_torchvision_round_trip():
    net = ResNet(3, 1000, 64, (2, 2, 2, 2), 32, stem="imagenet")
    shapes = net.param_shapes()
    assert len(shapes) == 62
    state = net.module.state_dict()
    assert len(state) == 122
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                 "layer2.0.downsample.1.running_var", "fc.weight"):
        assert name in state, name
    assert shapes["conv1.weight"] == (64, 3, 7, 7) and shapes["fc.weight"] == (1000, 512)
    assert net.num_params() == 11689512                       # torchvision's resnet18
    params, stats = net.init(seed=3), random_stats(net, 4)
    module_state = net.as_module(params, stats).state_dict()
    p2, s2 = net.from_torchvision(module_state)
    assert set(p2) == set(params) and set(s2) == set(stats)
    assert all(torch.equal(p2[k], params[k]) for k in params)
    assert all(torch.equal(s2[k], stats[k]) for k in stats)
    broken = dict(module_state)
    del broken["layer3.1.bn2.running_mean"]
    with pytest.raises(ShapeMismatchError, match=r"missing \['layer3.1.bn2.running_mean'\]"):
        net.from_torchvision(broken)


def test_as_module_and_from_module():
    net = ResNet(classes=4, width=4, **SMALL)
    params, stats = perturbed(net), random_stats(net)
    x = images(6)
    module = net.as_module(params, stats)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(params, x, stats), rtol=0, atol=1e-6)
    module.train()
    moments = net.batch_moments(params, x)
    with torch.no_grad():
        out = module(x)
    torch.testing.assert_close(out, net(params, x), rtol=0, atol=1e-6)
    state = module.state_dict()
    torch.testing.assert_close(state["bn1.running_mean"], 0.9 * stats["bn1.running_mean"]
                               + 0.1 * moments["bn1.running_mean"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(state["layer3.0.bn2.running_var"], 0.9 * stats["layer3.0.bn2.running_var"]
                               + 0.1 * moments["layer3.0.bn2.running_var"], rtol=1e-5, atol=1e-7)
    p2, s2 = net.from_module(module)
    assert all(torch.equal(p2[k], params[k]) for k in params)
    assert set(s2) == set(stats) and all(torch.equal(s2[k], state[k]) for k in stats)
    assert not torch.equal(s2["bn1.running_mean"], stats["bn1.running_mean"])
    # bn1's input is the stem convolution of x: its moments by hand
    z = F.conv2d(x, params["conv1.weight"], padding=1)
    torch.testing.assert_close(moments["bn1.running_mean"], z.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moments["bn1.running_var"], z.var(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeMismatchError, match="missing"):
        net.as_module(params, {k: v for k, v in stats.items() if k != "bn1.running_var"})


def test_estimate_stats():
    net = ResNet(classes=3, width=4, **SMALL)
    params = perturbed(net)
    x = images(9)
    whole = net.batch_moments(params, x[:8])
    got = estimate_stats(net, params, x[:8], batch_size=8)
    assert set(got) == set(net.init_stats()) and all(torch.equal(got[k], whole[k]) for k in whole)
    got = estimate_stats(net, params, x[:8], batch_size=100)
    assert all(torch.equal(got[k], whole[k]) for k in whole)
    a, b = net.batch_moments(params, x[:4]), net.batch_moments(params, x[4:8])
    halves = estimate_stats(net, params, x[:8], batch_size=4)
    assert all(torch.equal(halves[k], (a[k] + b[k]) / 2) for k in a)
    assert not torch.equal(halves["bn1.running_var"], whole["bn1.running_var"])
    # a last batch of one image is left out: 9 images in batches of 4 use the first 8
    nine = estimate_stats(net, params, x, batch_size=4)
    assert all(torch.equal(nine[k], halves[k]) for k in a)
    with pytest.raises(ConfigError, match="at least 2 images"):
        estimate_stats(net, params, x[:1])


# ---- fine-tuning --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", [0, 1, 2, 3, 4, 5])
def test_freezing_really_freezes(freeze):
    net, params, stats = pretrained(classes=None, width=4)
    original = {k: v.clone() for k, v in params.items()}
    stats_before = {k: v.clone() for k, v in stats.items()}
    x, y = labelled()
    result = fine_tune(net, params, stats, x, y, classes=3, steps=3, lr=0.1, bn="frozen", freeze_stages=freeze,
                       progress=False)
    assert result.model.classes == 3 and result.params["fc.weight"].shape == (3, 32)
    groups = stage_groups(result.model)
    assert list(groups) == [*STAGES, "head"]
    frozen = [k for s in STAGES[:freeze] for k in groups[s]]
    assert set(result.trainable) == set(result.params) - set(frozen)
    assert len(result.trainable) == len(result.params) - len(frozen)
    for i, stage in enumerate(STAGES):
        if i < freeze:
            assert all(torch.equal(result.params[k], original[k]) for k in groups[stage]), stage
        else:
            assert any(not torch.equal(result.params[k], original[k]) for k in groups[stage]), stage
    assert not torch.equal(result.params["fc.weight"], torch.zeros(3, 32))
    assert result.stats is stats or all(torch.equal(result.stats[k], stats_before[k]) for k in stats_before)
    assert set(result.stats) == set(stats_before)
    assert all(torch.equal(params[k], original[k]) for k in original)           # the input is not modified
    assert all(torch.equal(stats[k], stats_before[k]) for k in stats_before)
    assert not any(v.requires_grad for v in result.params.values())
    assert result.curve["step"] == [1, 2, 3] and result.best_step == 3 and not result.stopped_early


def test_linear_probe_is_freeze_five():
    net, params, stats = pretrained(classes=None, width=4)
    x, y = labelled()
    probe = linear_probe(net, params, stats, x, y, classes=3, steps=4, lr=0.05, progress=False)
    full = fine_tune(net, params, stats, x, y, classes=3, steps=4, lr=0.05, freeze_stages=5, progress=False)
    assert probe.trainable == ("fc.weight", "fc.bias")
    assert all(torch.equal(probe.params[k], full.params[k]) for k in full.params)


@pytest.mark.parametrize("freeze,bn,batch_size", [(0, "frozen", None), (2, "frozen", None), (2, "batch", None),
                                                  (3, "reestimate", None), (2, "frozen", 5), (2, "batch", 5)])
def test_per_stage_learning_rates_are_exact_sgd_steps(freeze, bn, batch_size):
    net, params, stats = pretrained(classes=3, width=4)
    x, y = labelled()
    lr, lrs = 0.01, {"layer4": 0.1, "head": 1.0}
    result = fine_tune(net, params, stats, x, y, classes=None, steps=1, lr=lr, lrs=lrs, optimizer="sgd",
                       freeze_stages=freeze, bn=bn, batch_size=batch_size, seed=3, progress=False)
    if batch_size is not None:       # the mini-batch fine_tune draws: the first batch_size of a seeded permutation
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:batch_size]
        x, y = x[idx], y[idx]
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = F.cross_entropy(net(leaves, x, stats if bn == "frozen" else None), y)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    frozen_stages = STAGES[:freeze]
    for k, g in grads.items():
        stage = net.stage_of(k)
        if stage in frozen_stages:
            assert torch.equal(result.params[k], params[k]), k
            continue
        assert g.abs().max() > 0, k                            # the body does get a gradient from this head
        expected = params[k] - lrs.get(stage, lr) * g
        torch.testing.assert_close(result.params[k], expected, rtol=1e-5, atol=1e-7, msg=k)
    assert result.curve["train_loss"] == [pytest.approx(float(loss.detach()), rel=1e-6)]


def test_batchnorm_modes():
    net, params, stats = pretrained(classes=None, width=4)
    x, y = labelled(12)
    common = dict(classes=3, steps=3, lr=0.05, progress=False)

    frozen = fine_tune(net, params, stats, x, y, bn="frozen", **common)
    assert frozen.bn == "frozen" and all(torch.equal(frozen.stats[k], stats[k]) for k in stats)
    alone = frozen.predict(x[:1])
    torch.testing.assert_close(alone, frozen.predict(x)[:1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(frozen.predict(x, batch_size=5), frozen.predict(x), rtol=1e-5, atol=1e-6)

    re = fine_tune(net, params, stats, x, y, bn="reestimate", **common)
    expected = estimate_stats(re.model, re.params, x)
    assert set(re.stats) == set(expected) and all(torch.equal(re.stats[k], expected[k]) for k in expected)
    assert not torch.equal(re.stats["bn1.running_mean"], stats["bn1.running_mean"])
    re_none = fine_tune(net, params, None, x, y, bn="reestimate", **common)      # stats=None is allowed
    assert all(torch.equal(re_none.params[k], re.params[k]) for k in re.params)

    batch = fine_tune(net, params, stats, x, y, bn="batch", **common)
    assert batch.stats is None and batch.bn == "batch"
    a = batch.predict(x[[0, 1, 2, 3]])[0]
    b = batch.predict(x[[0, 5, 6, 7]])[0]
    assert not torch.allclose(a, b, atol=1e-4)                 # transductive: depends on the other images
    torch.testing.assert_close(batch.predict(x), batch.model(batch.params, x))
    assert batch.accuracy(x, y) == float((batch.predict(x).argmax(-1) == y).float().mean())

    with pytest.raises(ConfigError) as info:
        fine_tune(net, params, stats, x, y, bn="train", **common)
    for mode in ("'frozen'", "'reestimate'", "'batch'", "unknown bn='train'"):
        assert mode in str(info.value)
    with pytest.raises(ConfigError, match="bn='frozen' keeps the pre-trained BatchNorm statistics, but stats=None"):
        fine_tune(net, params, None, x, y, bn="frozen", **common)


def test_early_stopping_keeps_the_best_parameters():
    net, params, stats = pretrained(classes=None, width=4)
    x, y = labelled(12)
    wrong = (y + 1) % 3                        # validating against other labels: little to gain from training
    kw = dict(classes=3, lr=0.05, freeze_stages=5, progress=False)
    result = fine_tune(net, params, stats, x, y, steps=20, x_val=x, y_val=wrong, eval_every=1, patience=2, **kw)
    curve = result.curve
    assert set(curve) == {"step", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert result.stopped_early
    assert len(curve["step"]) < 20 and curve["step"] == list(range(1, len(curve["step"]) + 1))
    assert all(len(v) == len(curve["step"]) for v in curve.values())
    # the best evaluation by (accuracy, then lower loss), first one on ties; then exactly `patience` worse ones
    best, key = None, None
    for step, va, vl in zip(curve["step"], curve["val_accuracy"], curve["val_loss"]):
        if key is None or (va, -vl) > key:
            best, key = step, (va, -vl)
    assert result.best_step == best and best in curve["step"]
    assert curve["step"][-1] == best + 2
    # the parameters kept are those after best_step steps (bit-identical to a run that stops there)
    at_best = fine_tune(net, params, stats, x, y, steps=best, **kw)
    assert all(torch.equal(result.params[k], at_best.params[k]) for k in at_best.params)
    final = fine_tune(net, params, stats, x, y, steps=curve["step"][-1], **kw)
    assert any(not torch.equal(result.params[k], final.params[k]) for k in final.params)
    # with a zero head the first loss is log(3) (every class equally likely)
    assert curve["train_loss"][0] == pytest.approx(np.log(3), rel=1e-6)
    # without patience it runs to the end, evaluating every eval_every steps and at the last step
    long = fine_tune(net, params, stats, x, y, steps=7, x_val=x, y_val=y, eval_every=3, **kw)
    assert not long.stopped_early and long.curve["step"] == [3, 6, 7] and long.best_step in (3, 6, 7)
    no_val = fine_tune(net, params, stats, x, y, steps=7, eval_every=3, **kw)
    assert no_val.curve["step"] == [3, 6, 7] and no_val.best_step == 7 and set(no_val.curve) == {
        "step", "train_loss", "train_accuracy"}


def test_fine_tune_errors():
    net, params, stats = pretrained(classes=None, width=4)
    x, y = labelled(6)
    kw = dict(classes=3, steps=2, progress=False)
    with pytest.raises(ConfigError, match="early stopping .patience. needs a validation split"):
        fine_tune(net, params, stats, x, y, patience=2, **kw)
    with pytest.raises(ConfigError, match=r"lrs names unknown stage\(s\) \['layer5'\]: the stages are stem, "
                                          r"layer1, layer2, layer3, layer4, head"):
        fine_tune(net, params, stats, x, y, lrs={"layer5": 0.1}, **kw)
    with pytest.raises(ConfigError, match="freeze_stages must be 0 .full fine-tuning. .. 5"):
        fine_tune(net, params, stats, x, y, freeze_stages=6, **kw)
    with pytest.raises(ConfigError, match="freeze_stages"):
        fine_tune(net, params, stats, x, y, freeze_stages=True, **kw)
    with pytest.raises(ShapeMismatchError, match=r"labels 0..4, but the head has 3 classes .* pass classes=5"):
        fine_tune(net, params, stats, x, torch.tensor([0, 1, 2, 3, 4, 0]), **kw)
    with pytest.raises(ConfigError, match="lr"):
        fine_tune(net, params, stats, x, y, lr=float("inf"), **kw)
    with pytest.raises(ConfigError, match="lr"):
        fine_tune(net, params, stats, x, y, lr=-1.0, **kw)
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        fine_tune(net, params, stats, x, y, optimizer="rmsprop", **kw)
    with pytest.raises(ConfigError, match="this network has no head: pass classes=N"):
        fine_tune(net, params, stats, x, y, steps=2, progress=False)
    with pytest.raises(ConfigError, match="x_val was given without y_val"):
        fine_tune(net, params, stats, x, y, x_val=x, **kw)
    with pytest.raises(ConfigError, match="ResNet"):
        stage_groups(object())
    with pytest.raises(DivergenceError, match=r"fine-tuning diverged at step \d+ \(loss (inf|nan)\) with learning "
                                              r"rates head 1e\+38: lower lr"):
        fine_tune(net, params, stats, x, y, classes=3, steps=3, lr=1e38, optimizer="sgd", freeze_stages=5,
                  progress=False)


def test_fine_tune_new_head_follows_the_params_dtype():
    net = ResNet(width=4, **SMALL)
    params, stats = net.init(seed=0, dtype=torch.float64), net.init_stats(torch.float64)
    x, y = labelled(6)
    result = fine_tune(net, params, stats, x.double(), y, classes=3, steps=2, progress=False)
    assert result.params["fc.weight"].dtype == torch.float64


def test_fine_tune_under_no_grad_still_trains():
    net, params, stats = pretrained(classes=3, width=4)
    x, y = labelled()
    with torch.no_grad():
        result = fine_tune(net, params, stats, x, y, steps=2, lr=0.05, progress=False)
        assert not torch.is_grad_enabled()                     # the caller's grad mode is restored
    outside = fine_tune(net, params, stats, x, y, steps=2, lr=0.05, progress=False)
    assert all(not torch.equal(result.params[k], params[k]) for k in ("conv1.weight", "fc.weight"))
    assert all(torch.equal(result.params[k], outside.params[k]) for k in params)


def test_nearest_neighbour_and_few_shot_predict():
    net, params, stats = pretrained(classes=None, width=4)
    x, y = labelled(10, classes=5)
    assert torch.equal(nearest_neighbour(net, params, stats, x, y, x), y)
    assert torch.equal(few_shot_predict("nearest neighbour", net, params, stats, x, y, x), y)
    # a query is labelled like the support image with the most similar embedding (cosine)
    q = images(4, seed=9)
    s = F.normalize(net.embed(params, x, stats), dim=-1)
    e = F.normalize(net.embed(params, q, stats), dim=-1)
    assert torch.equal(nearest_neighbour(net, params, stats, x, y, q), y[(e @ s.T).argmax(-1)])
    probe = few_shot_predict("linear probe", net, params, stats, x, y, q, steps=3, lr=0.05)
    direct = linear_probe(net, params, stats, x, y, classes=5, steps=3, lr=0.05, progress=False)
    assert torch.equal(probe, direct.predict(q).argmax(-1))
    with pytest.raises(ConfigError, match="unknown few-shot method 'knn': choose one of nearest neighbour, "
                                          "linear probe, fine-tune"):
        few_shot_predict("knn", net, params, stats, x, y, x)


# ---- data ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_load_digits(digits):
    x, y = digits
    assert x.shape == (1797, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    from sklearn.datasets import load_digits as sk
    raw = sk()
    x8, y8 = load_digits(8)
    assert x8.shape == (1797, 1, 8, 8)
    assert torch.equal(x8, torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16)
    assert torch.equal(y8, y) and torch.equal(y, torch.tensor(raw.target))
    assert torch.equal(x, F.interpolate(x8, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1))
    with pytest.raises(ConfigError, match="size"):
        load_digits(4)


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="scikit-learn"):
        load_digits()


def test_split_per_class(digits):
    _, y = digits
    a, b = split_per_class(y, (0.5, 0.5))
    assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(1797))
    assert not set(a.tolist()) & set(b.tolist())
    for c in range(10):
        n, na = int((y == c).sum()), int((y[a] == c).sum())
        assert abs(na - n / 2) <= 1, c
    again = split_per_class(y, (0.5, 0.5))
    assert torch.equal(again[0], a) and torch.equal(again[1], b)
    other = split_per_class(y, (0.5, 0.5), seed=1)
    assert not torch.equal(other[0], a)
    three = split_per_class(y, (0.2, 0.3, 0.5))
    assert [len(p) for p in three][2] == 1797 - len(three[0]) - len(three[1])
    assert int((y[three[0]] == 0).sum()) == round(0.2 * 178)
    for bad in ((0.5, 0.4), (1.2, -0.2)):
        with pytest.raises(ConfigError, match="fractions must be positive and sum to 1"):
            split_per_class(y, bad)


def test_labelled_image_tasks(digits):
    _, y = digits
    ids = torch.arange(1797, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)   # image i is all i
    family = LabelledImageTasks(ids, y, ways=5)
    batch = family.sample(4, shots=2, queries=3, seed=0)
    assert batch.x_support.shape == (4, 10, 1, 28, 28) and batch.y_support.shape == (4, 10)
    assert batch.x_query.shape == (4, 15, 1, 28, 28) and batch.y_query.shape == (4, 15)
    assert batch.y_support.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]] * 4
    assert batch.y_query.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]] * 4
    classes = batch.info["classes"]
    assert classes.shape == (4, 5)
    for b in range(4):
        assert len(set(classes[b].tolist())) == 5
        sup = batch.x_support[b, :, 0, 0, 0].long()
        qry = batch.x_query[b, :, 0, 0, 0].long()
        assert not set(sup.tolist()) & set(qry.tolist())
        assert len(set(sup.tolist())) == 10 and len(set(qry.tolist())) == 15
        assert torch.equal(y[sup], classes[b][batch.y_support[b]])       # label j is class info["classes"][j]
        assert torch.equal(y[qry], classes[b][batch.y_query[b]])
    same = family.sample(4, shots=2, queries=3, seed=0)
    for name in ("x_support", "y_support", "x_query", "y_query"):
        assert torch.equal(getattr(same, name), getattr(batch, name))
    assert torch.equal(same.info["classes"], classes)
    assert not torch.equal(family.sample(4, shots=2, queries=3, seed=1).x_support, batch.x_support)
    with pytest.raises(ConfigError, match="ways=11 but these images have only 10 classes"):
        LabelledImageTasks(ids, y, ways=11)
    with pytest.raises(ConfigError, match="the smallest class has 174 images"):
        family.sample(1, shots=100, queries=75)
    family.sample(1, shots=100, queries=74)


def test_pooled_classes():
    labels = torch.arange(30) % 7
    ids = torch.arange(30, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    pool = PooledClasses(ids, labels)
    assert pool.n_classes == 7 and pool.out_features == 7 and pool.in_features == (1, 4, 4)
    batch = pool.sample(3, shots=5, queries=4, seed=0)
    assert batch.x_support.shape == (3, 5, 1, 4, 4) and batch.x_query.shape == (3, 4, 1, 4, 4)
    assert batch.y_support.shape == (3, 5) and batch.y_query.shape == (3, 4)
    for b in range(3):
        idx = torch.cat([batch.x_support[b, :, 0, 0, 0], batch.x_query[b, :, 0, 0, 0]]).long()
        assert len(set(idx.tolist())) == 9                     # no image twice within a task
        assert torch.equal(torch.cat([batch.y_support[b], batch.y_query[b]]), labels[idx])   # global labels
    with pytest.raises(ConfigError, match="a batch of 31 images but the pool holds 30"):
        pool.sample(1, shots=16, queries=15)
    with pytest.raises(ConfigError, match="int64 label"):
        PooledClasses(ids, labels.float())


def test_omniglot_source_rotations():
    g = torch.Generator().manual_seed(0)
    alphabets = ["Greek", "Greek", "Sanskrit", "Latin", "Early_Aramaic", "Latin", "Greek"]
    n = len(alphabets)
    pics = torch.randint(0, 256, (n, 20, 12, 12), generator=g, dtype=torch.uint8)
    om = OmniglotImages(pics, alphabets, [f"{a}/character{i:02d}" for i, a in enumerate(alphabets)],
                        ["synthetic.zip"] * n, 12)
    train = [i for i, a in enumerate(alphabets) if a in ("Greek", "Latin")]       # 5 train characters
    x, y = omniglot_source(om)
    n_chars = len(train)
    assert x.shape == (4 * n_chars * 20, 1, 12, 12) and x.dtype == torch.float32
    assert torch.equal(torch.bincount(y), torch.full((4 * n_chars,), 20))
    assert torch.equal(y, torch.arange(4 * n_chars).repeat_interleave(20))
    per_class = x.view(4 * n_chars, 20, 12, 12)
    for c in range(n_chars):
        original = pics[train[c]].float() / 255
        assert torch.equal(per_class[c], original)
        for t in range(1, 4):
            assert torch.equal(per_class[c + t * n_chars], torch.rot90(original, t, dims=(-2, -1))), (c, t)
    x1, y1 = omniglot_source(om, rotations=False, drawers=slice(0, 3))
    assert x1.shape == (n_chars * 3, 1, 12, 12) and torch.equal(y1, torch.arange(n_chars).repeat_interleave(3))
    assert torch.equal(x1.view(n_chars, 3, 12, 12)[1], pics[train[1], :3].float() / 255)


# ---- the online-only example ------------------------------------------------------------------------------

def test_imagenet_to_cifar10_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(OnlineOnlyError) as info:
        imagenet_to_cifar10(progress=False)
    assert "torchvision" in str(info.value) and "internet" in str(info.value)


def test_imagenet_to_cifar10_offline(monkeypatch):
    calls = []

    class Weights:
        def get_state_dict(self, progress=True):
            calls.append("weights")
            raise urllib.error.URLError("no network")

    class Datasets:
        def CIFAR10(self, *args, **kwargs):                    # pragma: no cover - must not be reached
            raise AssertionError("tried to download CIFAR-10")

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(ResNet18_Weights=types.SimpleNamespace(IMAGENET1K_V1=Weights()))
    tv.datasets = Datasets()
    tf = types.ModuleType("torchvision.transforms")
    tv.transforms = tf
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", tf)
    with pytest.raises(OnlineOnlyError) as info:
        imagenet_to_cifar10(progress=False)
    assert calls == ["weights"]
    message = str(info.value)
    assert "internet" in message and "URLError" in message and "no network" in message
    assert isinstance(info.value, ValueError)


# ---- checkpoints ------------------------------------------------------------------------------------------

def test_checkpoint_buffers(tmp_path):
    net, params, stats = pretrained(classes=3, width=4)
    path = save_checkpoint(tmp_path / "resnet.pt", params, model=net, buffers=stats, metadata={"seed": 0})
    ckpt = load_checkpoint(path, net)
    assert set(ckpt.buffers) == set(stats) and all(torch.equal(ckpt.buffers[k], stats[k]) for k in stats)
    assert all(torch.equal(ckpt.params[k], params[k]) for k in params)
    assert ckpt.model_spec == net.spec() and ckpt.metadata == {"seed": 0}
    assert net(ckpt.params, images(2), ckpt.buffers).shape == (2, 3)
    plain = load_checkpoint(save_checkpoint(tmp_path / "plain.pt", params, model=net), net)
    assert plain.buffers == {}
    bad = dict(stats)
    bad["layer2.0.bn1.running_mean"] = torch.zeros(5)
    save_checkpoint(tmp_path / "bad.pt", params, model=net, buffers=bad)
    with pytest.raises((ShapeMismatchError, CheckpointError), match="layer2.0.bn1.running_mean"):
        load_checkpoint(tmp_path / "bad.pt", net)
    load_checkpoint(tmp_path / "bad.pt")                    # without a model nothing is checked
    missing = {k: v for k, v in stats.items() if k != "bn1.running_var"}
    save_checkpoint(tmp_path / "missing.pt", params, model=net, buffers=missing)
    with pytest.raises((ShapeMismatchError, CheckpointError), match="missing"):
        load_checkpoint(tmp_path / "missing.pt", net)
    with pytest.raises(CheckpointError, match="was saved for"):
        load_checkpoint(path, ResNet(classes=3, width=8, **SMALL))


# ---- exercises, explorer, plots -----------------------------------------------------------------------------

def test_chapter8_exercises():
    assert exercises.check("8.1", 4672)
    assert exercises.check("8.1", 4672.0)
    feedback = exercises.check("8.1", 4704)
    assert not feedback and "no bias" in feedback.message
    assert "statistics" in exercises.check("8.1", 4736).message
    assert exercises.check("8.2", 645)
    assert "bias per class" in exercises.check("8.2", 640).message
    assert exercises.check("8.3", 0.3 / np.sqrt(0.04 + 1e-5))
    assert exercises.check("8.3", 1.5)
    feedback = exercises.check("8.3", 7.5)
    assert not feedback and "standard deviation" in feedback.message
    assert "source mean" in exercises.check("8.3", 0.0).message
    net = ResNet(width=16, **SMALL)
    layer1 = sum(int(torch.Size(s).numel()) for k, s in net.param_shapes().items() if k.startswith("layer1."))
    assert layer1 == 4672
    assert net.embedding_size == 128
    assert sum(int(torch.Size(s).numel()) for s in net.with_head(5).param_shapes().values()) \
        - net.num_params() == 645


GRID = {"budget": "quick", "seed": 0, "episodes": 2, "points": [
    {"lr": lr, "freeze_stages": k, "steps": [0, 5, 10], "accuracy": [20.0, 20 + 10 * k * lr * 100, 50.0 + k],
     "ci95": [1.0, 2.0, 3.0]} for lr in (1e-3, 1e-2) for k in (0, 4, 5)]}


def test_finetune_explorer():
    from matplotlib.figure import Figure

    explorer = FineTuneExplorer(GRID)
    assert explorer.lrs == [1e-3, 1e-2] and explorer.freezes == [0, 4, 5] and explorer.steps == [0, 5, 10]
    fig = explorer.render(lr=1e-2, freeze_stages=4, steps=5)
    assert isinstance(fig, Figure)
    lines = [l for l in fig.axes[0].lines if len(l.get_xdata()) == 3]
    assert [list(l.get_ydata()) for l in lines] == [p["accuracy"] for p in GRID["points"][3:]]
    with pytest.raises(ConfigError, match=r"\(lr=0.5, freeze_stages=4\) is not in the precomputed grid"):
        explorer.render(lr=0.5, freeze_stages=4, steps=5)
    with pytest.raises(ConfigError, match="freeze_stages=3"):
        explorer.point(1e-3, 3)
    with pytest.raises(ConfigError, match="steps=7 is not a recorded step"):
        explorer.render(lr=1e-3, freeze_stages=0, steps=7)
    with pytest.raises(ConfigError, match="shipped_explorer"):
        FineTuneExplorer({"budget": "quick"})
    html = explorer.static(dpi=30)
    assert type(html).__name__ == "HTML" and "ml-static-explorer" in html.data
    plt.close("all")
    box = explorer.live()
    assert callable(box.redraw)
    box.redraw()
    plt.close("all")


def test_finetune_and_projection_plots():
    from matplotlib.figure import Figure

    curves = {"a": {"step": [1, 2, 3], "val_accuracy": [0.2, 0.5, 0.6], "train_loss": [1.0, 0.5, 0.2]},
              "b": {"step": [1, 2], "train_loss": [1.0, 0.9]}}
    fig = viz.plot_finetune_curves(curves)
    assert isinstance(fig, Figure)
    (line,) = fig.axes[0].lines                            # "b" has no validation curve
    assert list(line.get_ydata()) == pytest.approx([20.0, 50.0, 60.0])
    fig = viz.plot_finetune_curves(curves, key="train_loss")
    assert [list(l.get_ydata()) for l in fig.axes[0].lines] == [[1.0, 0.5, 0.2], [1.0, 0.9]]
    labels = [0, 1, 1, 2]
    xy = np.arange(8.0).reshape(4, 2)
    fig = viz.plot_embedding_projection({"before": xy, "after": -xy}, labels, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(ConfigError, match=r"projection 'after' must be \[n, 2\] for the 4 labels, got \[4, 3\]"):
        viz.plot_embedding_projection({"before": xy, "after": np.zeros((4, 3))}, labels)
    with pytest.raises(ConfigError, match="must be"):
        viz.plot_embedding_projection({"before": xy[:3]}, labels)
    plt.close("all")
