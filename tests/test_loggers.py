"""Logger plugins: the config key `loggers`, installed loggers through entry points, failure isolation,
progress.csv durability, and W&B in its offline mode."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import installed_distribution

from metarl.build import resolve_logger_kwargs
from metarl.config import Config, build_config
from metarl.errors import ConfigError, MetarlError
from metarl.loggers.progress import CSVLogger
from metarl.metrics import RETURN_AFTER, VALIDATION_RETURN
from metarl.trainer import Trainer, resume_trainer

TINY = {"meta_batch_size": 2, "fast_batch_size": 2, "horizon": 5, "eval_every": 2, "eval_tasks": 2}


def _config(**layer) -> Config:
    return build_config({"env": "navigation-2d", **TINY, **layer}, reference=True)


def _train(tmp_path: Path, iterations: int = 3, **layer) -> tuple[Trainer, Path]:
    trainer = Trainer(_config(**layer))
    run_dir = trainer.start_run(tmp_path)
    trainer.train(iterations)
    return trainer, run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


FAULTY_LOGGERS = """
class Flaky:
    calls = 0

    def __init__(self, run_dir, config):
        pass

    def log(self, step, scalars):
        type(self).calls += 1
        if type(self).calls == 2:
            raise OSError("disk quota exceeded")

    def close(self):
        pass


class BadClose(Flaky):
    def log(self, step, scalars):
        pass

    def close(self):
        raise RuntimeError("server went away")
"""


@pytest.fixture
def faulty_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`faulty-loggers`: `flaky` raises at its second log; `bad-close` raises when closed."""
    entry_points = {"metarl.loggers": {"flaky": "faulty_logger_mod:Flaky", "bad-close": "faulty_logger_mod:BadClose"}}
    yield from installed_distribution(
        tmp_path / "plugin", monkeypatch, "faulty-loggers", entry_points, {"faulty_logger_mod": FAULTY_LOGGERS}
    )


def test_default_loggers_are_tensorboard_and_csv(tmp_path):
    assert Config().loggers == ["tensorboard", "csv"]
    _, run_dir = _train(tmp_path, iterations=2)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert [r["iteration"] for r in _rows(run_dir)] == ["1", "2"]


def test_only_the_named_loggers_write(tmp_path):
    _, run_dir = _train(tmp_path, iterations=2, loggers=["csv"])
    assert not list(run_dir.glob("events.out.tfevents.*"))
    assert len(_rows(run_dir)) == 2


def test_an_installed_logger_gets_every_iteration_with_validation(tmp_path):
    """The example plugin's `jsonl` logger, found through its entry point, with a key of its own."""
    trainer, run_dir = _train(tmp_path, loggers=["csv", "jsonl"], logger_kwargs={"jsonl": {"file_name": "s.jsonl"}})
    assert trainer.config.logger_kwargs["jsonl"] == {"file_name": "s.jsonl"}
    lines = [json.loads(line) for line in (run_dir / "s.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    rows = _rows(run_dir)
    for line, row in zip(lines, rows):
        assert line["scalars"][RETURN_AFTER] == pytest.approx(float(row[RETURN_AFTER]))
    assert [line["scalars"][VALIDATION_RETURN] is not None for line in lines] == [False, True, False]


def test_a_failing_logger_is_reported_once_and_the_run_goes_on(tmp_path, faulty_logger, capsys):
    _, run_dir = _train(tmp_path, iterations=4, loggers=["flaky", "csv"])
    err = capsys.readouterr().err
    assert err.count("logger 'flaky' (faulty-loggers) failed in log: OSError: disk quota exceeded") == 1
    assert "the run goes on without it" in err
    assert [r["iteration"] for r in _rows(run_dir)] == ["1", "2", "3", "4"]


def test_a_logger_failing_to_close_is_named(tmp_path, faulty_logger, capsys):
    _train(tmp_path, iterations=1, loggers=["bad-close", "csv"])
    assert (
        "logger 'bad-close' (faulty-loggers) failed in close: RuntimeError: server went away" in capsys.readouterr().err
    )


def test_loggers_are_closed_when_training_fails(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(CSVLogger, "close", lambda self: closed.append(self.path))
    trainer = Trainer(_config(loggers=["csv"]))
    trainer.start_run(tmp_path)

    def fail(iteration, metrics):
        raise MetarlError("a plugin broke")

    with pytest.raises(MetarlError, match="a plugin broke"):
        trainer.train(3, on_iteration=fail)
    assert len(closed) == 1


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"loggers": ["tensorbord"]}, "unknown logger 'tensorbord'. Did you mean 'tensorboard'?"),
        ({"loggers": ["csv", "csv"]}, "config key 'loggers'"),
        ({"loggers": "csv"}, "expected a list of distinct names"),
        ({"logger_kwargs": {"wandb": {"mode": "offline"}}}, "logger_kwargs has keys for 'wandb', which is not in"),
        ({"loggers": ["wandb"], "logger_kwargs": {"wandb": {"mode": "cloud"}}}, "logger 'wandb': bad value 'cloud'"),
        ({"loggers": ["wandb"], "logger_kwargs": {"wandb": {"projct": "x"}}}, "Did you mean 'project'?"),
    ],
)
def test_bad_logger_config_is_one_line_before_any_run_directory(tmp_path, layer, message):
    with pytest.raises(MetarlError, match="^[^\n]*$") as caught:
        Trainer(_config(**layer))
    assert message in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_a_missing_wandb_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logger 'wandb': the wandb package is not installed: pip install"):
        resolve_logger_kwargs(["wandb"], {})


def test_rows_are_durable_before_the_checkpoint_that_covers_them(tmp_path, monkeypatch):
    import metarl.trainer as trainer_module

    csv_syncs: list[int] = []
    seen_at_checkpoint: list[tuple[int, int, int]] = []
    real_fsync, real_save = os.fsync, trainer_module.save_checkpoint

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("progress.csv"):
            csv_syncs.append(fd)
        real_fsync(fd)

    def save(path, iteration, state):
        last_row = int(_rows(path.parent.parent)[-1]["iteration"])
        seen_at_checkpoint.append((iteration, last_row, len(csv_syncs)))
        return real_save(path, iteration, state)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    _train(tmp_path, iterations=3, loggers=["csv"], checkpoint_every=1)
    assert {i for i, _, _ in seen_at_checkpoint} == {1, 2, 3}
    # at each checkpoint, its iteration's row is in the file and was synced (one sync per row)
    assert all(i == last_row and syncs >= i for i, last_row, syncs in seen_at_checkpoint)


def test_a_torn_last_row_is_repaired_on_resume(tmp_path):
    _, run_dir = _train(tmp_path, iterations=2, loggers=["csv"], checkpoint_every=1)
    text = (run_dir / "progress.csv").read_text()
    torn = text + "3,-1.2345"  # killed while it wrote iteration 3's row, after checkpoint 2
    (run_dir / "progress.csv").write_text(torn)
    trainer = resume_trainer(run_dir, warn=lambda message: None)
    trainer.train(3)
    rows = _rows(run_dir)
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert all(len(r) == len(rows[0]) and None not in r for r in rows)
    assert math.isfinite(float(rows[-1][RETURN_AFTER]))


def test_run_files_get_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        _, run_dir = _train(tmp_path, iterations=1)
    finally:
        os.umask(previous)
    for path in [run_dir / "config.yaml", run_dir / "progress.csv", *run_dir.glob("checkpoints/*.pt")]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def _wandb_history(run_dir: Path) -> list[dict[str, float]]:
    """The history records of the offline W&B run in `run_dir`, read from its `.wandb` file: a
    7-byte header, then records framed as in LevelDB's log (32 KiB blocks, each chunk with a
    4-byte checksum, 2-byte length and 1-byte type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, position, chunk, records = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            records.append(chunk)
            chunk = b""
    history = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return history


def test_wandb_logs_every_iteration_offline(tmp_path):
    pytest.importorskip("wandb")
    trainer, run_dir = _train(
        tmp_path, loggers=["csv", "wandb"], logger_kwargs={"wandb": {"mode": "offline", "project": "metarl-test"}}
    )
    deadline = time.monotonic() + 60  # W&B's service process may still be writing after finish()
    while len(history := _wandb_history(run_dir)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [h["_step"] for h in history] == [1, 2, 3]
    for logged, row in zip(history, _rows(run_dir)):
        assert logged[RETURN_AFTER] == pytest.approx(float(row[RETURN_AFTER]))
    assert [VALIDATION_RETURN in h for h in history] == [False, True, False]  # NaN (not measured) left out
