"""The documentation's code: docs/tutorial.md's plugin is written out, installed and trained, and the
generated pages of the site (docs/hooks.py) render from the real parser and declarations.

The tutorial's convention: a code block with a file name, ```LANG title="PATH"```, is the file PATH of
the plugin's folder; the `metarl ...` lines of its ```bash blocks are the commands the reader runs
(those training more than a couple of iterations are left out here). The folder is made an installed
distribution with the entry points of its own pyproject.toml (a `*.dist-info` beside it on sys.path,
as `pip install -e` would), so metarl finds it exactly as it finds a real plugin.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
from fnmatch import fnmatch
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import write_distribution
from gymnasium.utils.env_checker import check_env

import metarl
from metarl import cli, registry
from metarl.config import KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"
FILE_BLOCK = re.compile(r'^```(?P<lang>[\w+-]+) title="(?P<path>[^"]+)"\n(?P<body>.*?)^```[ \t]*$', re.M | re.S)
BASH_BLOCK = re.compile(r"^```bash[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
MAX_TESTED_ITERATIONS = 2


def tutorial_files() -> dict[str, str]:
    files = {m["path"]: m["body"] for m in FILE_BLOCK.finditer(TUTORIAL.read_text())}
    assert "pyproject.toml" in files, "the tutorial has no pyproject.toml block"
    return files


def tutorial_commands() -> list[list[str]]:
    """Each `metarl ...` command of the tutorial's bash blocks, as argv after `metarl`."""
    commands = []
    for block in BASH_BLOCK.finditer(TUTORIAL.read_text()):
        for line in block["body"].replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "metarl":
                commands.append(argv[1:])
    return commands


def _iterations(argv: list[str]) -> int | None:
    return int(argv[argv.index("--iterations") + 1]) if "--iterations" in argv else None


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading the tutorial's pyproject.toml needs Python >= 3.11")
    return tomllib.loads(tutorial_files()["pyproject.toml"])


@pytest.fixture(scope="module")
def families(pyproject) -> dict[str, str]:
    entries = pyproject["project"]["entry-points"]["metarl.envs"]
    assert entries, "the tutorial's pyproject.toml declares no metarl.envs entry point"
    return entries


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyproject) -> Path:
    """The tutorial's plugin folder, written out and installed (on sys.path, with its entry points);
    the current directory for the test, as the tutorial's commands run from it."""
    project = tmp_path / "plugin"
    for path, body in tutorial_files().items():
        target = project / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    packages = pyproject["tool"]["setuptools"]["packages"]
    write_distribution(project, pyproject["project"]["name"], pyproject["project"]["entry-points"], {})
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    for reg in registry.REGISTRIES.values():
        reg.reload()
    yield project
    for reg in registry.REGISTRIES.values():
        reg.reload()  # rediscovered without the plugin once monkeypatch restores sys.path
    for module in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[module]


def test_tutorial_package_is_complete(pyproject) -> None:
    files = tutorial_files()
    packages = pyproject["tool"]["setuptools"]["packages"]
    assert all(f"{package}/__init__.py" in files for package in packages), sorted(files)
    data = pyproject["tool"]["setuptools"].get("package-data", {})
    for path in files:
        package, _, rest = path.partition("/")
        if package in packages and not path.endswith(".py"):
            patterns = data.get(package, [])
            assert any(fnmatch(rest, p) for p in patterns), f"{path} is not packaged: package-data {patterns}"


def test_tutorial_family_is_found_samples_tasks_and_steps(plugin: Path, pyproject, families) -> None:
    rows = {row.name: row for row in registry.envs.status()}
    for name, target in families.items():
        row = rows[name]
        assert (row.package, row.target, row.error) == (pyproject["project"]["name"], target, None)
        cls = registry.envs.load(name)
        assert issubclass(cls, metarl.TaskDistribution)
        family = cls()
        tasks = family.sample_tasks(5, np.random.default_rng(0))
        assert tasks == family.sample_tasks(5, np.random.default_rng(0)), "tasks must depend on rng only"
        assert len(tasks) == 5 and all(isinstance(t, dict) for t in tasks)
        yaml.safe_dump(tasks)  # JSON-like values only
        env = family.make_env(tasks[0])
        assert isinstance(env.observation_space, (gym.spaces.Box, gym.spaces.Discrete))
        assert isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete))
        check_env(env, skip_render_check=True)
        obs, _ = env.reset(seed=0)
        for _ in range(family.max_episode_steps):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs) and np.isfinite(reward)
            if terminated or truncated:
                break
        if cls.config_file is not None:
            assert cls.reference_config(), f"{name}'s config_file is empty"


def test_tutorial_scripts_run(plugin: Path, capsys: pytest.CaptureFixture, one_torch_thread) -> None:
    scripts = [path for path in tutorial_files() if path.endswith(".py") and "/" not in path]
    assert scripts, "the tutorial has no script to run"
    for script in scripts:
        runpy.run_path(str(plugin / script), run_name="__main__")
    out = capsys.readouterr().out
    if "train.py" in scripts:
        assert re.search(rf"^iteration {MAX_TESTED_ITERATIONS}: return before adaptation -?\d", out, re.M), out


def test_tutorial_commands_run(plugin: Path, families, capsys: pytest.CaptureFixture, one_torch_thread) -> None:
    commands = tutorial_commands()
    listing = [argv for argv in commands if argv[:1] == ["list"]]
    trains = [argv for argv in commands if argv[:1] == ["train"] and (_iterations(argv) or 0) <= MAX_TESTED_ITERATIONS]
    assert listing and trains, f"no `metarl list` or short `metarl train` in the tutorial: {commands}"
    for argv in listing:
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        for name in families:
            assert re.search(rf"^\s+{re.escape(name)}\s+\S+ \S+\s+ok$", out, re.M), out
    for argv in trains:
        assert cli.main([*argv, "--no-progress"]) == 0
        out, err = capsys.readouterr()
        iterations = _iterations(argv)
        assert re.search(rf"^iteration {iterations}: return before adaptation", out, re.M), out + err
        (run_dir,) = [line.split(": ", 1)[1] for line in err.splitlines() if line.startswith("run directory: ")]
        run_dir = Path(run_dir)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["env"] == argv[argv.index("--env") + 1] and config["env"] in families
        assert list((run_dir / "checkpoints").glob(f"iter-*{iterations}.pt"))


# --- the generated pages ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("metarl_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_page_has_every_subcommand_and_flag(hooks) -> None:
    text = hooks.render_cli()
    parser = cli.build_parser()
    subcommands = hooks._subcommands(parser)
    assert {"train", "evaluate", "adapt", "plot", "sweep", "list"} <= set(subcommands)
    for name, sub in subcommands.items():
        assert f"## `metarl {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                if action.help != argparse.SUPPRESS:
                    assert flag in text, (name, flag)


def test_config_page_lists_every_run_level_key_and_component(hooks) -> None:
    run_keys = hooks.render_run_keys()
    for key in KEYS:
        assert f"| `{key}` |" in run_keys, key
    components = hooks.render_component_keys()
    for name in ("maml-trpo", "promp", "gaussian-mlp", "l2-anchor", "navigation-2d"):
        assert f"#### `{name}`" in components, name
    for key in ("max_kl", "cg_subsample", "clip_eps", "hidden_sizes", "init_std"):
        assert f"| `{key}` |" in components, key


def test_every_doc_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        found = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            found += pages(value) if isinstance(value, list) else [value]
        return found

    assert sorted(pages(config["nav"])) == sorted(p.name for p in DOCS.glob("*.md"))
