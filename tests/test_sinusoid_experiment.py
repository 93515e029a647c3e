"""The sinusoid experiment: results files, the command line, reproduce/evaluate end to end, costs, probes."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import metalearn_core as ml
from metalearn_core import cli
from metalearn_core.costs import PeakMemory, measure_step_costs
from metalearn_core.evaluation import t_critical
from metalearn_core.experiments import get_experiment, sinusoid
from metalearn_core.results import format_table, read_results, select, validate_row, write_results


def _row(**kw):
    row = {"experiment": "sinusoid", "algorithm": "MAML", "setting": "5-shot", "metric": "mse", "steps": 1,
           "mean": 0.5, "ci95": 0.05, "n_tasks": 600, "budget": "cpu", "seed": 0}
    row.update(kw)
    return row


# ---- results files ------------------------------------------------------------------------------------------

def test_valid_row_passes_and_each_bad_field_is_named():
    assert validate_row(_row())["mean"] == 0.5
    bad = {"metric": "loss", "budget": "laptop", "steps": -1, "n_tasks": 0, "mean": float("nan"), "seed": 1.5,
           "algorithm": ""}
    for field, value in bad.items():
        with pytest.raises(ml.ConfigError, match=field if field not in ("steps", "n_tasks") else "steps|n_tasks"):
            validate_row(_row(**{field: value}))
    row = _row()
    del row["ci95"]
    with pytest.raises(ml.ConfigError, match="ci95"):
        validate_row(row)


def test_write_merges_rows_and_never_erases_other_budgets(tmp_path):
    path = tmp_path / "r.json"
    write_results(path, [_row(budget="cpu", mean=0.5), _row(budget="cpu", steps=5, mean=0.4)])
    write_results(path, [_row(budget="quick", mean=3.0)])
    write_results(path, [_row(budget="cpu", mean=0.45)])          # replaces the cpu 1-step row only
    rows = read_results(path)
    assert len(rows) == 3
    assert select(rows, budget="cpu", steps=1)[0]["mean"] == 0.45
    assert select(rows, budget="quick")[0]["mean"] == 3.0
    assert isinstance(json.loads(path.read_text()), list)


def test_reading_missing_or_malformed_results_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="reproduce sinusoid"):
        read_results(tmp_path / "sinusoid.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ml.ConfigError, match="not valid JSON"):
        read_results(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(ml.ConfigError, match="JSON list"):
        read_results(tmp_path / "obj.json")


def test_format_table_shows_published_values_in_brackets():
    text = format_table([_row(published=0.67), _row(steps=5, mean=0.38, ci95=0.02)], steps=(1, 5, 10))
    assert "0.50 ± 0.05 [0.67]" in text and "0.38 ± 0.02" in text and "–" in text
    md = format_table([_row()], steps=(1,), markdown=True)
    assert md.splitlines()[0].startswith("| setting |")


# ---- evaluation statistics against a direct computation ----------------------------------------------------

def test_adaptation_curve_equals_a_direct_per_task_computation():
    family = ml.SinusoidTasks()
    learner = ml.MAML(ml.MLP((1, 16, 16, 1)), alpha=0.02)
    params = learner.model.init(3)
    curve = ml.adaptation_curve(learner, params, family, steps=3, shots=5, queries=30, n_tasks=40, seed=9,
                                chunk=16)
    # the same tasks, by hand: one task at a time, plain autograd, plain numpy statistics
    g = ml.make_generator(ml.evaluation.TEST_SEED_OFFSET + 9)
    batches = [family.sample(n, shots=5, queries=30, generator=g) for n in (16, 16, 8)]
    losses = []
    for b in batches:
        for i in range(b.n_tasks):
            p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            row = []
            for s in range(4):
                loss = ml.mse_loss(learner.model(p, b.x_query[i]), b.y_query[i])
                row.append(float(loss.detach()))
                if s < 3:
                    support = ml.mse_loss(learner.model(p, b.x_support[i]), b.y_support[i])
                    grads = torch.autograd.grad(support, list(p.values()))
                    p = {k: (v - 0.02 * gk).detach().requires_grad_(True) for (k, v), gk in zip(p.items(), grads)}
            losses.append(row)
    losses = np.array(losses)
    np.testing.assert_allclose(curve.mean, losses.mean(0), rtol=1e-4)
    t39 = 2.0227                                   # Student's t, 0.975 quantile, 39 degrees of freedom
    np.testing.assert_allclose(curve.ci95, t39 * losses.std(0, ddof=1) / math.sqrt(40), rtol=2e-3)


def test_t_critical_against_published_table_values():
    for df, t in ((1, 12.706), (10, 2.228), (39, 2.0227), (99, 1.9842), (599, 1.9639), (10_000, 1.9602)):
        assert t_critical(df) == pytest.approx(t, abs=2e-3)


# ---- linear probes (trainable=) -----------------------------------------------------------------------------

def test_trainable_freezes_every_other_parameter():
    learner = ml.MAML(ml.MLP((1, 8, 8, 1)), alpha=0.1)
    params = learner.model.init(0)
    b = ml.SinusoidTasks().sample(1, seed=0)
    adapted = learner.adapt(params, b.x_support[0], b.y_support[0], steps=3, trainable=["4.weight", "4.bias"])
    for k in params:
        moved = not torch.equal(adapted[k], params[k])
        assert moved == k.startswith("4."), k
    with pytest.raises(ml.ConfigError, match="5.weight"):
        learner.adapt(params, b.x_support[0], b.y_support[0], trainable=["5.weight"])


def test_probe_losses_match_gradient_descent_on_the_last_layer_alone():
    learner = ml.FOMAML(ml.MLP((1, 8, 8, 1)), alpha=0.05)
    params = learner.model.init(1)
    batch = ml.SinusoidTasks().sample(4, shots=5, queries=20, seed=2)
    probe = ml.adaptation_losses(learner, params, batch, steps=2, trainable=["4.weight", "4.bias"])
    for i in range(4):
        p = dict(params)
        for _ in range(2):
            head = {k: p[k].clone().requires_grad_(True) for k in ("4.weight", "4.bias")}
            loss = ml.mse_loss(learner.model({**p, **head}, batch.x_support[i]), batch.y_support[i])
            grads = torch.autograd.grad(loss, list(head.values()))
            p.update({k: (v - 0.05 * g).detach() for (k, v), g in zip(head.items(), grads)})
        expected = ml.mse_loss(learner.model(p, batch.x_query[i]), batch.y_query[i])
        assert float(probe[i, 2]) == pytest.approx(float(expected), rel=1e-5)


# ---- costs ---------------------------------------------------------------------------------------------------

def test_peak_memory_counts_allocations_exactly_and_frees_them():
    with PeakMemory() as mem:
        a = torch.ones(1000)              # 4,000 bytes
        b = torch.ones(500, dtype=torch.float64)   # 4,000 bytes
        del a, b
        c = torch.ones(250)               # 1,000 bytes, after both were freed
    assert mem.peak_bytes == 8000
    assert mem.live_bytes == 1000
    del c


def test_maml_memory_grows_with_inner_steps_and_first_order_memory_does_not():
    family, model = ml.SinusoidTasks(), ml.MLP((1, 40, 40, 1))
    learners = [cls(model, alpha=0.01, inner_steps=k) for cls in (ml.MAML, ml.FOMAML) for k in (1, 4)]
    costs = measure_step_costs(learners, family, meta_batch=5, rounds=1, calls=1)
    maml1, maml4, fo1, fo4 = (c.peak_bytes for c in costs)
    assert maml4 > 2 * maml1
    assert fo4 < 1.3 * fo1
    assert maml1 > fo1
    assert all(c.ms_per_step > 0 for c in costs)


# ---- reproduce and evaluate, end to end at the quick budget ---------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    lines = []
    paths = sinusoid.reproduce("quick", seed=0, root=root, progress=False, log=lines.append)
    return root, paths, lines


def test_quick_reproduce_writes_results_checkpoints_and_the_explorer_grid(quick_run):
    root, paths, lines = quick_run
    rows = read_results(root / "sinusoid.json")
    algos = {r["algorithm"] for r in rows}
    assert algos == {"MAML", "FOMAML", "Reptile", "pre-trained"}
    assert {r["setting"] for r in rows} == {"5-shot", "10-shot"}
    assert {r["steps"] for r in rows} == set(range(11))
    assert all(r["budget"] == "quick" and r["seed"] == 0 and r["n_tasks"] == 100 for r in rows)
    pub = select(rows, algorithm="MAML", setting="5-shot", steps=1)[0]["published"]
    assert pub == 0.67
    for name in algos:
        ckpt = sinusoid.checkpoint_path(name, "quick", 0, root)
        assert ckpt.is_file() and ckpt.stat().st_size < 1_000_000
    grid = sinusoid.load_explorer(root)
    assert len(grid["points"]) == math.prod(len(v) for v in sinusoid.EXPLORER_GRID.values())
    ok = [p for p in grid["points"] if p["curve"] is not None]
    assert ok and all(len(p["curve"]["mean"]) == sinusoid.MAX_STEPS + 1 and not p["error"] for p in ok)
    assert all(p["history"]["iterations"] for p in grid["points"] if not p["error"])
    assert any("query MSE" in line for line in lines)


def test_evaluate_reproduces_the_file_with_the_same_seed_and_differs_with_another(quick_run):
    root, _, _ = quick_run
    shipped = select(read_results(root / "sinusoid.json"), budget="quick")
    again = sinusoid.evaluate(0, 100, budget="quick", root=root, log=lambda s: None)
    by_key = {(r["algorithm"], r["setting"], r["steps"]): r["mean"] for r in shipped}
    for r in again:
        assert r["mean"] == pytest.approx(by_key[r["algorithm"], r["setting"], r["steps"]], rel=1e-5)
    other = sinusoid.evaluate(5, 30, budget="quick", root=root, log=lambda s: None)
    assert all(r["n_tasks"] == 30 and r["test_seed"] == 5 for r in other)
    assert any(abs(r["mean"] - by_key[r["algorithm"], r["setting"], r["steps"]]) > 1e-3 for r in other)


def test_checkpoint_of_another_algorithm_is_refused(quick_run, tmp_path):
    root, _, _ = quick_run
    import shutil
    target = sinusoid.checkpoint_path("MAML", "quick", 0, tmp_path)
    target.parent.mkdir(parents=True)
    for name in ("FOMAML", "Reptile", "pre-trained"):
        shutil.copy(sinusoid.checkpoint_path(name, "quick", 0, root), sinusoid.checkpoint_path(name, "quick", 0, tmp_path))
    shutil.copy(sinusoid.checkpoint_path("Reptile", "quick", 0, root), target)
    with pytest.raises(ml.CheckpointError, match="Reptile.*reproduce sinusoid"):
        sinusoid.load_models(budget="quick", root=tmp_path)


# ---- the command line -------------------------------------------------------------------------------------------

def test_cli_unknown_experiment_is_one_clear_line(capsys):
    assert cli.main(["evaluate", "omniglotz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown experiment 'omniglotz'") and "sinusoid" in err
    assert "Traceback" not in err


def test_cli_missing_checkpoint_says_how_to_create_it(capsys, tmp_path):
    assert cli.main(["evaluate", "sinusoid", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no MAML checkpoint" in err and "python -m metalearn_core reproduce sinusoid --budget cpu" in err


def test_cli_evaluate_prints_the_table(quick_run, capsys):
    root, _, _ = quick_run
    assert cli.main(["evaluate", "sinusoid", "--budget", "quick", "--seed", "3", "--tasks", "20",
                     "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "20 fresh test tasks (test seed 3)" in out
    assert "5-shot" in out and "pre-trained" in out and "[0.67]" in out
    assert cli.main(["evaluate", "sinusoid", "--tasks", "1", "--results", str(root)]) == 2


def test_cli_rejects_bad_options_and_lists_experiments(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "sinusoid", "--budget", "laptop"])
    assert exc.value.code == 2
    assert "invalid choice: 'laptop'" in capsys.readouterr().err
    assert cli.main(["list"]) == 0
    assert "sinusoid" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "metalearn_core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "reproduce" in out.stdout and "evaluate" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "metalearn_core", "evaluate", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown experiment" in bad.stderr and "Traceback" not in bad.stderr


def test_get_experiment_is_case_insensitive():
    assert get_experiment(" Sinusoid ") is sinusoid


def test_diverging_test_tasks_are_left_out_and_counted_only_when_asked():
    family = ml.SinusoidTasks()
    learner = ml.MAML(ml.MLP((1, 16, 16, 1)), alpha=0.01)
    params = learner.model.init(0)
    # α = 0.5 makes some tasks (the large-amplitude ones) blow up and leaves others finite
    with pytest.raises(ml.DivergenceError, match="diverged"):
        ml.adaptation_curve(learner, params, family, steps=10, shots=5, n_tasks=60, alpha=0.5)
    curve = ml.adaptation_curve(learner, params, family, steps=10, shots=5, n_tasks=60, alpha=0.5,
                                exclude_diverged=True)
    assert 0 < curve.diverged < 60 and curve.n_tasks == 60 - curve.diverged
    assert np.isfinite(curve.mean).all() and "diverged" in curve.summary()
    ok = ml.adaptation_curve(learner, params, family, steps=3, shots=5, n_tasks=20, exclude_diverged=True)
    assert ok.diverged == 0 and ok.n_tasks == 20


def test_table_marks_rows_with_left_out_tasks():
    rows = [_row(diverged_tasks=1, n_tasks=599), _row(steps=5)]
    text = sinusoid.table(rows, steps=(1, 5))
    assert "0.50 ± 0.05†" in text and "diverged on 1 of 600 test tasks" in text


def test_reproduce_can_reuse_existing_checkpoints(quick_run):
    root, _, _ = quick_run
    before = {n: sinusoid.checkpoint_path(n, "quick", 0, root).stat().st_mtime_ns for n in ("MAML", "Reptile")}
    models = sinusoid.train(["MAML", "Reptile"], budget="quick", seed=0, root=root, progress=False, reuse=True)
    assert set(models) == {"MAML", "Reptile"}
    after = {n: sinusoid.checkpoint_path(n, "quick", 0, root).stat().st_mtime_ns for n in ("MAML", "Reptile")}
    assert before == after


def test_html_tables_hold_every_cell_escaped_with_the_footnote():
    rows = [_row(diverged_tasks=2, n_tasks=598, published=0.67, shots=5), _row(setting="10-shot", shots=10)]
    html = sinusoid.html_table(rows, steps=(1,), digits=3).data
    assert html.count("<tr>") == 3 and "0.500 ± 0.050† [0.670]" in html
    assert "diverged on 2 of 600 test tasks" in html
    assert html.index("5-shot") < html.index("10-shot")            # settings ordered by shots
    escaped = ml.viz.html_table(["a<b"], [["x & y"]]).data
    assert "a&lt;b" in escaped and "x &amp; y" in escaped
