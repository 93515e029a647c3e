"""The cross-alphabet test protocol and long-run machinery behind chapter 7: episodes inside the one-shot runs,
within-alphabet episodes, intervals over alphabets, Reptile's inner mini-batches and resumable training."""

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core.omniglot import RUN_ALPHABETS, OneShotRunTasks, OmniglotTasks


@pytest.fixture(scope="module")
def runs():
    return ml.load_oneshot_runs()


@pytest.fixture(scope="module")
def images():
    return ml.load_omniglot()


# ---- episodes inside the 20 one-shot runs -----------------------------------------------------------------------

def test_run_episodes_pair_the_two_drawings_of_one_character(runs):
    fam = OneShotRunTasks(runs, ways=5)
    batch = fam.sample(40, shots=1, queries=1, seed=3)
    assert batch.x_support.shape == (40, 5, 1, 28, 28) and batch.x_query.shape == (40, 5, 1, 28, 28)
    assert torch.equal(batch.y_support, batch.y_query) and batch.y_support[0].tolist() == [0, 1, 2, 3, 4]
    for b in range(0, 40, 7):
        run = runs[int(batch.info["run"][b])]
        for j in range(5):
            c = int(batch.info["characters"][b, j])
            item = int((run.answers == c).nonzero())          # the test item that shows character c
            pair = {run.train[c].sum().item(), run.test[item].sum().item()}
            got = {batch.x_support[b, j].sum().item(), batch.x_query[b, j].sum().item()}
            assert got == pair
            assert not torch.equal(batch.x_support[b, j], batch.x_query[b, j])
    # episodes cycle through the runs: 40 episodes give every run two and every alphabet four
    assert np.bincount(batch.info["run"].numpy(), minlength=20).tolist() == [2] * 20
    assert np.bincount(batch.info["group"].numpy()).tolist() == [4] * 10
    assert fam.group_names == tuple(dict.fromkeys(RUN_ALPHABETS)) and len(fam.group_names) == 10


def test_run_episodes_are_mostly_solved_by_pixels_far_above_chance(runs):
    """A sanity check that support and query really are the same character: nearest neighbour on raw pixels."""
    fam = OneShotRunTasks(runs, ways=5)
    batch = fam.sample(200, shots=1, queries=1, seed=0)
    d = torch.cdist(batch.x_query.flatten(2), batch.x_support.flatten(2))          # [B, 5, 5]
    acc = (d.argmin(-1) == batch.y_query).float().mean().item()
    assert acc > 0.35                                                               # chance is 0.2


def test_run_episodes_refuse_what_the_runs_cannot_give(runs):
    with pytest.raises(ml.ConfigError, match="ways <= 20"):
        OneShotRunTasks(runs, ways=21)
    fam = OneShotRunTasks(runs, ways=20)
    with pytest.raises(ml.ConfigError, match="shots=1 and queries=1"):
        fam.sample(2, shots=5, queries=1)
    with pytest.raises(ml.ConfigError, match="one alphabet per run"):
        OneShotRunTasks(runs[:3])
    with pytest.raises(ml.ConfigError, match="load_oneshot_runs"):
        OneShotRunTasks([1, 2])


def test_within_alphabet_episodes_stay_in_one_alphabet_and_take_turns(images):
    fam = OmniglotTasks(images, "test", ways=5, within_alphabet=True)
    batch = fam.sample(10, shots=5, queries=15, seed=2)
    for b in range(10):
        names = {images.alphabets[int(c)] for c in batch.info["characters"][b]}
        assert names == {fam.group_names[int(batch.info["group"][b])]}
    assert np.bincount(batch.info["group"].numpy()).tolist() == [5, 5]
    with pytest.raises(ml.ConfigError, match="Tagalog has 17"):
        OmniglotTasks(images, "test", ways=20, within_alphabet=True)
    # without the option the episodes mix the split's alphabets and carry no group
    plain = OmniglotTasks(images, "test", ways=5).sample(40, shots=1, queries=2, seed=0)
    assert "group" not in plain.info
    mixed = [len({images.alphabets[int(c)] for c in plain.info["characters"][b]}) for b in range(40)]
    assert max(mixed) == 2


def test_splits_hold_out_two_background_alphabets_and_keep_the_earlier_split(images):
    from metalearn_core.omniglot import SPLITS, SPLITS_V1

    sizes = {s: OmniglotTasks(images, s).n_characters for s in SPLITS}
    assert sizes == {"train": 161, "val": 22, "test": 59}
    assert {s: OmniglotTasks(images, s, splits=SPLITS_V1).n_characters for s in SPLITS_V1} == \
        {"train": 178, "val": 22, "test": 42}


# ---- intervals over alphabets ---------------------------------------------------------------------------------

def test_group_interval_counts_each_alphabet_once():
    values = np.array([1.0, 1.0, 1.0, 0.0, 0.5, 0.5])
    groups = np.array([0, 0, 0, 1, 2, 2])
    mean, ci, n = ml.evaluation.group_mean_ci95(values, groups)
    assert n == 3 and mean == pytest.approx(0.5)
    assert ci == pytest.approx(ml.mean_ci95([1.0, 0.0, 0.5])[1])
    with pytest.raises(ValueError):
        ml.evaluation.group_mean_ci95(values, groups[:3])


def test_curves_carry_the_alphabet_of_every_episode(runs):
    model = ml.Conv4(ways=5, width=4)
    learner = ml.MAML(model, alpha=0.4, loss=ml.omniglot.cross_entropy_loss)
    curve = ml.adaptation_curve(learner, model.init(0), OneShotRunTasks(runs, ways=5), steps=1, n_tasks=20)
    assert curve.groups.shape == (20,) and len(curve.by_group(1)) == 10
    assert set(curve.by_group(0)) == set(dict.fromkeys(RUN_ALPHABETS))
    sinus = ml.adaptation_curve(ml.MAML(ml.MLP((1, 8, 1))), ml.MLP((1, 8, 1)).init(0), ml.SinusoidTasks(),
                                steps=1, n_tasks=5)
    with pytest.raises(ml.ConfigError, match="no groups"):
        sinus.over_groups(1)


# ---- Reptile's inner mini-batches ----------------------------------------------------------------------------

def test_stratified_order_takes_every_class_in_turn():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])
    order = ml.Reptile.stratified_order(y)
    assert y[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert order.tolist() == [0, 2, 4, 1, 3, 5, 6, 7, 8]                    # each class keeps its own order


def test_reptile_minibatch_step_is_a_gradient_step_on_the_first_minibatch():
    torch.manual_seed(0)
    model = ml.Conv4(ways=3, width=4)
    params = {k: v.double() for k, v in model.init(0).items()}
    x = torch.rand(9, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    reptile = ml.Reptile(model, alpha=0.1, inner_steps=1, inner_batch=3, loss=ml.omniglot.cross_entropy_loss)
    diff, _, _ = reptile._difference(params, x, y)
    first = torch.tensor([0, 3, 6])                                          # one drawing of every class
    g = torch.func.grad(reptile.task_loss)(params, x[first], y[first])
    for k in params:
        assert torch.allclose(diff[k], 0.1 * g[k], atol=1e-12), k
    # a mini-batch as large as the task is the full-batch Reptile, step after step
    full = ml.Reptile(model, alpha=0.1, inner_steps=3, loss=ml.omniglot.cross_entropy_loss)
    big = ml.Reptile(model, alpha=0.1, inner_steps=3, inner_batch=9, loss=ml.omniglot.cross_entropy_loss)
    a, b = full._difference(params, x, y)[0], big._difference(params, x, y)[0]
    for k in params:
        assert torch.allclose(a[k], b[k], atol=1e-12), k
    assert "mini-batches of 3" in reptile.describe() and reptile.hyperparameters()["inner_batch"] == 3
    # the meta-gradient is the same through vmap (GPU, MLPs) and through the loop (Conv4 on a CPU)
    mlp = ml.MLP((1, 8, 1))
    p = mlp.init(0)
    batch = ml.SinusoidTasks().sample(3, shots=6, queries=4, seed=0)
    looped = ml.Reptile(mlp, alpha=0.01, inner_steps=4, inner_batch=5, vectorize=False).meta_gradient(p, batch)[0]
    mapped = ml.Reptile(mlp, alpha=0.01, inner_steps=4, inner_batch=5, vectorize=True).meta_gradient(p, batch)[0]
    for k in p:
        assert torch.allclose(looped[k], mapped[k], atol=1e-6), k
    with pytest.raises(ml.ConfigError, match="inner_batch"):
        ml.Reptile(model, inner_batch=0)


# ---- resumable training ----------------------------------------------------------------------------------------

class _Recorder:
    """A stateful callback: what it saw must survive an interruption."""

    def __init__(self, stop_at=None):
        self.seen, self.stop_at = [], stop_at

    def __call__(self, it, metrics, params):
        if it == self.stop_at:
            raise KeyboardInterrupt                 # the run is killed here, before this point is saved
        self.seen.append((it, round(metrics["loss"], 12)))

    def state_dict(self):
        return {"seen": [list(s) for s in self.seen]}

    def load_state_dict(self, state):
        self.seen = [tuple(s) for s in state["seen"]]


def _run(tmp_path, callback, seed=0, resume=True):
    model = ml.MLP((1, 16, 1))
    learner = ml.MAML(model, alpha=0.01)
    return ml.meta_train(learner, ml.SinusoidTasks(), budget="quick", iterations=60, meta_batch=4, log_every=5,
                         seed=seed, callbacks=[callback], progress=False,
                         resume=tmp_path / "run.resume" if resume else None, resume_every=0)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path):
    straight = _run(tmp_path / "a", _Recorder(), resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", _Recorder(stop_at=35))
    assert (tmp_path / "b" / "run.resume").is_file()
    state = torch.load(tmp_path / "b" / "run.resume", weights_only=True)
    assert state["iteration"] == 30
    rec = _Recorder()
    resumed = _run(tmp_path / "b", rec)
    for k, v in straight.params.items():
        assert torch.equal(v, resumed.params[k]), k
    assert resumed.history.iterations == straight.history.iterations
    assert resumed.history.metrics == straight.history.metrics
    assert [s[0] for s in rec.seen] == list(range(5, 61, 5))           # the callback's state came back too
    assert not (tmp_path / "b" / "run.resume").exists()                 # removed when the run finished


def test_a_resume_file_of_another_run_or_a_broken_one_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, _Recorder(stop_at=20))
    with pytest.raises(ml.CheckpointError, match="another run.*seed"):
        _run(tmp_path, _Recorder(), seed=1)
    (tmp_path / "run.resume").write_bytes(b"not a torch file")
    with pytest.raises(ml.CheckpointError, match="delete it"):
        _run(tmp_path, _Recorder())
