"""Every bad input gets a one-line MetaLearnError that says what was wrong and how to fix it."""

import math

import pytest
import torch

import metalearn_core as ml
from metalearn_core.errors import CheckpointError, ConfigError, DivergenceError, ShapeMismatchError


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    assert len(msg) < 400
    return msg


@pytest.mark.parametrize("alpha", [-0.1, 0.0, math.nan, math.inf, "big"])
@pytest.mark.parametrize("cls", [ml.MAML, ml.FOMAML, ml.Reptile, ml.JointTraining])
def test_bad_alpha(cls, alpha):
    with pytest.raises(ConfigError) as e:
        cls(ml.MLP(), alpha=alpha)
    assert "α" in one_line(e)


@pytest.mark.parametrize("beta", [-1e-3, 0, math.nan])
def test_bad_beta(beta):
    learner = ml.MAML(ml.MLP((1, 4, 1)))
    with pytest.raises(ConfigError) as e:
        ml.meta_train(learner, ml.SinusoidTasks(), outer_lr=beta, iterations=2, progress=False)
    assert "β" in one_line(e)


@pytest.mark.parametrize("cls", [ml.MAML, ml.FOMAML, ml.Reptile])
def test_zero_inner_steps_where_one_is_needed(cls):
    with pytest.raises(ConfigError) as e:
        cls(ml.MLP(), inner_steps=0)
    msg = one_line(e)
    assert "inner_steps" in msg and "at least one" in msg


def test_zero_inner_steps_is_fine_for_joint_training():
    assert ml.JointTraining(ml.MLP(), inner_steps=0).inner_steps == 0


@pytest.mark.parametrize("shots", [0, -3])
def test_k_less_than_one(shots):
    with pytest.raises(ConfigError) as e:
        ml.SinusoidTasks().sample(4, shots=shots)
    assert "K" in one_line(e)


def test_k_less_than_one_in_evaluation():
    learner = ml.MAML(ml.MLP((1, 4, 1)))
    with pytest.raises(ConfigError):
        ml.adaptation_curve(learner, learner.model.init(0), ml.SinusoidTasks(), shots=0, n_tasks=5)


def test_model_and_task_shape_mismatch_in_training():
    learner = ml.MAML(ml.MLP((2, 8, 1)))
    with pytest.raises(ShapeMismatchError) as e:
        ml.meta_train(learner, ml.SinusoidTasks(), iterations=2, progress=False)
    assert "in_features=1" in one_line(e)


def test_model_and_task_shape_mismatch_in_meta_gradient():
    learner = ml.MAML(ml.MLP((1, 8, 1)))
    batch = ml.QuadraticTasks().sample(3)
    with pytest.raises(ShapeMismatchError) as e:
        learner.meta_gradient(learner.model.init(0), batch)
    assert "2 feature(s)" in one_line(e)


def test_params_of_another_model():
    learner = ml.MAML(ml.MLP((1, 8, 1)))
    with pytest.raises(ShapeMismatchError) as e:
        ml.meta_train(learner, ml.SinusoidTasks(), iterations=2, progress=False,
                      params=ml.MLP((1, 9, 1)).init(0))
    assert "shape" in one_line(e)


@pytest.mark.parametrize("name", ["fast", "CPU2", ""])
def test_unknown_budget_name(name):
    with pytest.raises(ConfigError) as e:
        ml.resolve_budget(name)
    assert "quick, cpu, full" in one_line(e)


def test_unknown_budget_from_environment(monkeypatch):
    monkeypatch.setenv("METALEARN_BUDGET", "gpu")
    with pytest.raises(ConfigError) as e:
        ml.resolve_budget()
    assert "METALEARN_BUDGET" in one_line(e)


def test_budget_names_are_case_insensitive_and_env_is_read(monkeypatch):
    assert ml.resolve_budget("QUICK") == "quick"
    monkeypatch.setenv("METALEARN_BUDGET", "full")
    assert ml.resolve_budget() == "full"
    monkeypatch.delenv("METALEARN_BUDGET")
    assert ml.resolve_budget() == "cpu"


def test_unknown_algorithm_and_activation():
    with pytest.raises(ConfigError):
        ml.make_learner("maml++", ml.MLP())
    with pytest.raises(ConfigError):
        ml.MLP((1, 4, 1), activation="gelu-ish")


def test_checkpoint_of_another_model(tmp_path):
    model = ml.MLP((1, 8, 1))
    ml.save_checkpoint(tmp_path / "a.pt", model.init(0), model=model)
    with pytest.raises(CheckpointError) as e:
        ml.load_checkpoint(tmp_path / "a.pt", ml.MLP((1, 40, 40, 1)))
    msg = one_line(e)
    assert "MLP(sizes=[1, 8, 1]" in msg and "MLP(1-40-40-1" in msg


def test_checkpoint_of_another_version(tmp_path):
    model = ml.MLP((1, 8, 1))
    path = ml.save_checkpoint(tmp_path / "a.pt", model.init(0), model=model)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as e:
        ml.load_checkpoint(path, model)
    assert "version 99" in one_line(e)


def test_corrupt_and_missing_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError) as e:
        ml.load_checkpoint(bad)
    assert "corrupt" in one_line(e)
    with pytest.raises(CheckpointError) as e:
        ml.load_checkpoint(tmp_path / "nope.pt")
    assert "meta_train" in one_line(e)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as e:
        ml.load_checkpoint(path)
    assert "not a metalearn checkpoint" in one_line(e)


def test_training_that_diverges_stops_with_a_message_naming_alpha_and_beta():
    learner = ml.MAML(ml.MLP((1, 40, 40, 1)), alpha=50.0)
    with pytest.raises(DivergenceError) as e:
        ml.meta_train(learner, ml.SinusoidTasks(), iterations=50, progress=False)
    msg = one_line(e)
    assert "α=50" in msg and "β=" in msg and "diverg" in msg


def test_training_that_produces_nan_names_alpha_and_beta():
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    params = {"w": torch.tensor([float("nan"), 0.0])}
    with pytest.raises(DivergenceError) as e:
        ml.meta_train(learner, ml.QuadraticTasks(), iterations=5, params=params, progress=False)
    msg = one_line(e)
    assert "nan" in msg and "α=0.1" in msg and "β=" in msg


def test_adaptation_that_diverges_raises_instead_of_returning_nan():
    family = ml.QuadraticTasks()
    learner = ml.MAML(ml.LinearModel(2), alpha=0.1)
    with pytest.raises(DivergenceError) as e:
        ml.adaptation_curve(learner, learner.model.init(), family, steps=10, alpha=3.0, n_tasks=50)
    assert "α=3" in one_line(e)


def test_errors_are_value_errors():
    assert issubclass(ml.MetaLearnError, ValueError)
    for cls in (ConfigError, ShapeMismatchError, CheckpointError, DivergenceError):
        assert issubclass(cls, ml.MetaLearnError)


def test_bad_task_family_settings():
    with pytest.raises(ConfigError):
        ml.SinusoidTasks(amplitude=(5, 0.1))
    with pytest.raises(ConfigError):
        ml.QuadraticTasks(dim=3, center_mean=(1, 2))
    with pytest.raises(ConfigError):
        ml.QuadraticTasks(input_scale=(1.0, 0.0))
    with pytest.raises(ConfigError):
        ml.make_generator(1.5)
