"""The shipped meta-trained runs: each loads, evaluates and adapts, and nothing is written into the package."""

from __future__ import annotations

import pytest
from test_cli import metarl as cli

from metarl import pretrained
from metarl.errors import UnknownNameError
from metarl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _package_files() -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in pretrained.root().rglob("*")}


def test_the_reproductions_are_shipped():
    """The five runs issue 15 names, each the best of its reproduction (docs/benchmarks.md)."""
    shipped = set(pretrained.names())
    expected = {"navigation-2d-maml-trpo", "halfcheetah-dir-maml-trpo", "halfcheetah-dir-promp"}
    expected |= {"ant-dir-maml-trpo", "ant-dir-promp"}
    assert expected <= shipped, expected - shipped


@pytest.mark.parametrize("name", pretrained.names())
def test_each_shipped_run_loads_and_adapts_better_than_it_starts(name):
    trainer = Trainer.from_run(pretrained.run_dir(f"pretrained:{name}"), checkpoint="best")
    tasks = trainer.validation_tasks[:5]
    result = trainer.evaluate(tasks, 1, trainer.config.fast_batch_size, seed=0)
    before, after = result.returns.mean(0)
    assert after > before, f"{name}: one inner step should help ({before:.2f} -> {after:.2f})"


@pytest.mark.slow
def test_evaluate_and_adapt_pretrained_write_elsewhere(tmp_path):
    files = _package_files()
    result = cli("evaluate", "pretrained:navigation-2d-maml-trpo", "--tasks", "3", "--steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "evaluations" / "navigation-2d-maml-trpo" / "evaluation.json").is_file()
    out = tmp_path / "adapted.zip"
    task = '{"goal": [0.3, -0.2]}'
    result = cli("adapt", "pretrained:navigation-2d-maml-trpo", "--task", task, "--steps", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert _package_files() == files
    listing = cli("list", "pretrained")
    assert "navigation-2d-maml-trpo  env navigation-2d, algo maml-trpo" in listing.stdout


def test_unknown_pretrained_name_suggests_the_shipped_ones():
    with pytest.raises(UnknownNameError, match="Did you mean pretrained:navigation-2d-maml-trpo"):
        pretrained.run_dir("pretrained:navigation-2d-maml")
