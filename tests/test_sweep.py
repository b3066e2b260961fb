"""`metarl sweep`: real `metarl train` children, β chosen by validation, the chosen runs tested."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

from metarl.algos.held_out import AdaptationResult
from metarl.errors import MetarlError, UnknownNameError
from metarl.sweep import SweepRun, add_sweep_parser, run_sweep, summarize_test

TINY = ["--iterations", "1", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "horizon=5"]


def sweep_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metarl")
    add_sweep_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["sweep", *argv])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_chooses_the_best_validation_weight_and_tests_it(tmp_path: Path, capsys) -> None:
    args = sweep_args(
        "--env", "navigation-2d", "--regularizer", "entropy", "--weights", "0.1,0", "--seeds", "3",
        "--logdir", str(tmp_path), "--jobs", "2", "--set", "eval_tasks=4", *TINY,
    )  # fmt: skip
    assert run_sweep(args) == 0
    (sweep_dir,) = tmp_path.iterdir()
    assert sweep_dir.name.startswith("sweep-navigation-2d-entropy-")

    for weight in (0.0, 0.1):
        logdir = sweep_dir / f"w={weight:g}-s=3"
        (run_dir,) = [d for d in logdir.iterdir() if d.is_dir()]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["regularizers"] == {"entropy": {"weight": weight}}
        assert config["seed"] == 3 and config["horizon"] == 5
        assert list((run_dir / "checkpoints").glob("iter-000001.pt"))

    table = read_csv(sweep_dir / "validation.csv")
    assert [float(row["weight"]) for row in table] == [0.0, 0.1]
    assert all(row["seed_3"] == row["validation_mean"] for row in table)
    best = max(table, key=lambda row: float(row["validation_mean"]))
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["chosen_weight"] == float(best["weight"])
    assert matplotlib.image.imread(sweep_dir / "validation.png").ndim == 3

    chosen = summary["chosen_weight"]
    tested = {float(row["weight"]): row for row in read_csv(sweep_dir / "test.csv")}
    assert set(tested) == {chosen, 0.0}, "the chosen β and the unregularized baseline are tested"
    for weight, row in tested.items():
        assert row["seed"] == "3" and f"w={weight:g}-s=3" in row["run_dir"]
        assert float(row["ci_low"]) < float(row["return_after_adaptation"]) < float(row["ci_high"])
    after = float(tested[chosen]["return_after_adaptation"])
    assert after == pytest.approx(summary["test"]["chosen"]["mean"]) == summary["test"]["mean_return_after_adaptation"]
    assert after != float(best["validation_mean"]), "test tasks ≠ validation tasks"
    if chosen != 0.0:
        baseline = float(tested[0.0]["return_after_adaptation"])
        assert summary["test"]["chosen_minus_unregularized"]["mean"] == pytest.approx(after - baseline, abs=1e-4)
    assert not list(sweep_dir.rglob("*.tmp"))
    out = capsys.readouterr().out
    assert f"chosen β = {summary['chosen_weight']:g}" in out and "<- chosen" in out


def test_the_test_summary_pairs_the_chosen_weight_with_the_unregularized_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    returns = {(w, s): rng.normal(size=(5, 2)) for w in (0.0, 0.5) for s in (1, 2)}
    results = {
        SweepRun(w, s, tmp_path): AdaptationResult(tasks=[{}] * 5, returns=r, adapted_params={})
        for (w, s), r in returns.items()
    }
    summary = summarize_test(results, chosen=0.5)
    assert (summary["tasks"], summary["seeds"]) == (5, 2)

    chosen = np.concatenate([returns[0.5, 1][:, -1], returns[0.5, 2][:, -1]])
    differences = chosen - np.concatenate([returns[0.0, 1][:, -1], returns[0.0, 2][:, -1]])
    half = 1.96 * differences.std(ddof=1) / np.sqrt(10)
    assert summary["chosen"]["mean"] == pytest.approx(chosen.mean())
    assert summary["chosen"]["seed_means"] == pytest.approx([returns[0.5, s][:, -1].mean() for s in (1, 2)])
    paired = summary["chosen_minus_unregularized"]
    assert [paired["ci_low"], paired["mean"], paired["ci_high"]] == pytest.approx(
        [differences.mean() - half, differences.mean(), differences.mean() + half]
    )
    assert "unregularized" not in summarize_test(results, chosen=0.0), "β = 0 chosen: nothing to compare"


def test_a_failing_run_stops_the_sweep_naming_it(tmp_path: Path) -> None:
    # consistency needs two tasks per meta-batch: the child fails at its first iteration
    args = sweep_args(
        "--env", "navigation-2d", "--regularizer", "consistency", "--weights", "1", "--logdir", str(tmp_path),
        *TINY, "--set", "meta_batch_size=1",
    )  # fmt: skip
    with pytest.raises(MetarlError) as info:
        run_sweep(args)
    message = str(info.value)
    assert "run w=1-s=0 failed (exit code 2)" in message
    assert "metarl: error: regularizer 'consistency' needs meta_batch_size >= 2" in message
    (sweep_dir,) = tmp_path.iterdir()
    assert not (sweep_dir / "validation.csv").exists()


def test_a_stopped_sweep_resumes_each_run_where_it_stopped(tmp_path: Path) -> None:
    args = sweep_args(
        "--env", "navigation-2d", "--regularizer", "entropy", "--weights", "0,0.1,1", "--logdir", str(tmp_path),
        "--set", "eval_tasks=2", *TINY,
    )  # fmt: skip
    assert run_sweep(args) == 0
    (sweep_dir,) = tmp_path.iterdir()
    saved = json.loads((sweep_dir / "sweep-args.json").read_text())
    assert saved["weights"] == "0,0.1,1" and saved["iterations"] == 1
    # The state of a sweep stopped during its second iteration: w=0 has its checkpoint of iteration 1,
    # w=0.1 was never started, w=1 stopped before its first checkpoint.
    saved["iterations"] = 2
    (sweep_dir / "sweep-args.json").write_text(json.dumps(saved))
    (first_run,) = [d for d in (sweep_dir / "w=0-s=0").iterdir() if d.is_dir()]
    first_iteration = read_csv(first_run / "progress.csv")[0]
    shutil.rmtree(sweep_dir / "w=0.1-s=0")
    for checkpoint in (sweep_dir / "w=1-s=0").glob("*/checkpoints/*.pt"):
        checkpoint.unlink()

    assert run_sweep(sweep_args("--resume", str(sweep_dir), "--jobs", "1")) == 0
    for weight in ("0", "0.1", "1"):
        (run_dir,) = [d for d in (sweep_dir / f"w={weight}-s=0").iterdir() if d.is_dir()]
        assert [row["iteration"] for row in read_csv(run_dir / "progress.csv")] == ["1", "2"]
        assert (run_dir / "checkpoints" / "iter-000002.pt").exists()
    assert read_csv(first_run / "progress.csv")[0] == first_iteration, "w=0 continued, not retrained"
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert set(summary["run_dirs"]) == {"w=0-s=0", "w=0.1-s=0", "w=1-s=0"}


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of the processes whose command line contains `text` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process ended meanwhile
    return found


def _sweep_training_two_runs(logdir: Path) -> tuple[subprocess.Popen[str], Path]:
    """A `metarl sweep` process of two long runs, once both are in their training loops."""
    command = [sys.executable, "-m", "metarl", "sweep", "--env", "navigation-2d", "--regularizer", "entropy",
               "--weights", "0,1", "--iterations", "100000", "--logdir", str(logdir), "--jobs", "2",
               "--set", "eval_tasks=2", "--set", "checkpoint_every=2", *TINY[2:]]  # fmt: skip
    sweep = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len({c.parents[2] for c in logdir.glob("*/w=*/*/checkpoints/iter-*.pt")}) < 2:  # a checkpoint each
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.2)
    (sweep_dir,) = logdir.iterdir()
    return sweep, sweep_dir


def _stopped_runs(sweep_dir: Path, signal_name: str) -> dict[str, int]:
    """Each run's newest checkpoint, once no process trains on; each run must have stopped on `signal_name`."""
    deadline = time.monotonic() + 60
    while _processes_mentioning(str(sweep_dir)):
        assert time.monotonic() < deadline, "a run trains on after the sweep ended"
        time.sleep(0.2)
    stopped = {}
    for run_log in sweep_dir.glob("w=*/train.log"):
        assert f"{signal_name} received: stopping after the current iteration" in run_log.read_text()
        stopped[run_log.parent.name] = max(int(c.stem[5:]) for c in run_log.parent.glob("*/checkpoints/iter-*.pt"))
    assert set(stopped) == {"w=0-s=0", "w=1-s=0"}
    return stopped


def test_sigterm_stops_the_sweep_and_its_runs_with_checkpoints_then_it_resumes(tmp_path: Path) -> None:
    sweep, sweep_dir = _sweep_training_two_runs(tmp_path)
    sweep.send_signal(signal.SIGTERM)
    _, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, stderr
    assert f"continue it with: metarl sweep --resume {sweep_dir}" in stderr
    stopped = _stopped_runs(sweep_dir, "SIGINT")

    saved = json.loads((sweep_dir / "sweep-args.json").read_text())
    saved["iterations"] = max(stopped.values()) + 1  # finish soon after where they stopped
    (sweep_dir / "sweep-args.json").write_text(json.dumps(saved))
    assert run_sweep(sweep_args("--resume", str(sweep_dir))) == 0
    assert (sweep_dir / "sweep.json").exists()


def test_a_killed_sweep_leaves_no_run_training(tmp_path: Path) -> None:
    """SIGKILL gives the sweep no chance to stop its children: the kernel sends them SIGTERM."""
    sweep, sweep_dir = _sweep_training_two_runs(tmp_path)
    sweep.kill()
    sweep.communicate(timeout=60)
    _stopped_runs(sweep_dir, "SIGTERM")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--env", "navigation-2d"], "drop --env"),
        (["--weights", "0,1", "--seeds", "1"], "drop --seeds, --weights"),
        ([], "is not a sweep directory: it has no sweep-args.json"),
    ],
)
def test_resume_refuses_the_sweeps_arguments_and_other_folders(tmp_path: Path, argv: list[str], fragment: str) -> None:
    with pytest.raises(MetarlError, match=fragment):
        run_sweep(sweep_args("--resume", str(tmp_path), *argv))


def test_resume_names_a_damaged_saved_argument(tmp_path: Path) -> None:
    (tmp_path / "sweep-args.json").write_text(json.dumps({"env": "navigation-2d", "regularizer": "entropy"}))
    with pytest.raises(MetarlError, match="sweep-args.json' is damaged: 'weights' is missing or of the wrong type"):
        run_sweep(sweep_args("--resume", str(tmp_path)))
    assert [p.name for p in tmp_path.iterdir()] == ["sweep-args.json"]


def test_a_new_sweep_needs_env_regularizer_and_weights(tmp_path: Path) -> None:
    with pytest.raises(MetarlError, match="sweep needs --regularizer, --weights"):
        run_sweep(sweep_args("--env", "navigation-2d", "--logdir", str(tmp_path)))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, error, fragment",
    [
        (["--weights", "0.1,x"], MetarlError, "--weights must be comma-separated float values"),
        (["--weights", "0.1,0.1"], MetarlError, "lists a value twice"),
        (["--weights", "0.1", "--seeds", "1.5"], MetarlError, "--seeds must be comma-separated int values"),
        (["--weights", "0.1", "--set", "seed=1"], MetarlError, "use --seeds"),
        (["--weights", "0.1", "--set", "meta_batch_size=0"], MetarlError, "meta_batch_size"),
        (["--weights", "0.1", "--jobs", "0"], MetarlError, "--jobs"),
        (["--weights", "0.1", "--regularizer", "entrpy"], UnknownNameError, "entropy"),
    ],
)
def test_bad_arguments_fail_before_any_run(tmp_path: Path, argv: list[str], error: type, fragment: str) -> None:
    args = sweep_args("--env", "navigation-2d", "--regularizer", "entropy", "--logdir", str(tmp_path), *argv)
    with pytest.raises(error) as info:
        run_sweep(args)
    assert fragment in str(info.value)
    assert not list(tmp_path.iterdir())
