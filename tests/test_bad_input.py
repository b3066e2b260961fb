"""Over forty kinds of bad input: each ends `metarl` with exit code 2 and one line naming the problem.

The cases run `metarl.cli.main` in-process (fast); `tests/test_cli.py` checks the same behaviour in real
subprocesses. Plugin cases use fake installed distributions put on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_distribution

from metarl import registry
from metarl.cli import main

SMALL = ["--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "horizon=3", "--no-progress"]

BAD_PLUGIN_MODULE = """
import gymnasium as gym
import numpy as np
import torch
from metarl import Regularizer, TaskDistribution
from metarl_envs.navigation import Navigation2D


class DictObservations(TaskDistribution):
    def sample_tasks(self, num_tasks, rng):
        return [{}] * num_tasks

    def make_env(self, task):
        env = gym.make("CartPole-v1")
        env.observation_space = gym.spaces.Dict({"x": gym.spaces.Discrete(2)})
        return env


class FailingTasks(TaskDistribution):
    def sample_tasks(self, num_tasks, rng):
        raise RuntimeError("no tasks today")


class TensorPolicy(torch.nn.Module):
    def __init__(self, observation_space, action_space):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, obs):
        return self.linear(obs)


class VectorRegularizer(Regularizer):
    def __call__(self, ctx):
        return torch.ones(3)
"""


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    write_distribution(
        root,
        "bad-plugins",
        {
            "metarl.envs": {
                "raising-env": "bad_plugins_raise:Env",
                "not-a-family": "bad_plugins_mod:TensorPolicy",
                "dict-observations": "bad_plugins_mod:DictObservations",
                "failing-tasks": "bad_plugins_mod:FailingTasks",
            },
            "metarl.policies": {
                "raising-policy": "bad_plugins_raise:Policy",
                "tensor-policy": "bad_plugins_mod:TensorPolicy",
            },
            "metarl.regularizers": {
                "raising-regularizer": "bad_plugins_raise:Reg",
                "vector-regularizer": "bad_plugins_mod:VectorRegularizer",
                "not-a-regularizer": "bad_plugins_mod:FailingTasks",
            },
        },
        {
            "bad_plugins_raise": "raise ImportError('bad_plugins needs a missing library')\n",
            "bad_plugins_mod": BAD_PLUGIN_MODULE,
        },
    )
    return root


@pytest.fixture
def with_bad_plugins(bad_plugins, monkeypatch):
    monkeypatch.syspath_prepend(str(bad_plugins))
    for reg in registry.REGISTRIES.values():
        reg.reload()
    yield
    for reg in registry.REGISTRIES.values():
        reg.reload()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("run")
    assert main(["train", "--env", "navigation-2d", "--iterations", "1", "--logdir", str(logdir), *SMALL]) == 0
    (run,) = logdir.iterdir()
    return run


NAV = ["train", "--env", "navigation-2d"]
CASES = {
    # names
    "unknown env": (NAV[:2] + ["navigaton-2d"], "Did you mean 'navigation-2d'"),
    "no env": (["train"], "no task family given"),
    "unknown policy": (NAV + ["--policy", "gaussian"], "unknown policy 'gaussian'"),
    "policy for the wrong action space": (NAV + ["--policy", "categorical-mlp"], "needs a Discrete action space"),
    "unknown regularizer": (NAV + ["--regularizer", "l2_anchor=1"], "Did you mean 'l2-anchor'"),
    "regularizer weight not a number": (NAV + ["--regularizer", "l2-anchor=much"], "not a number"),
    "regularizer without name": (NAV + ["--regularizer", "=1"], "NAME=WEIGHT"),
    # --set keys
    "unknown key": (NAV + ["--set", "metabatch=4"], "unknown config key 'metabatch'"),
    "set without equals": (NAV + ["--set", "inner_lr"], "KEY=VALUE"),
    "set with empty key": (NAV + ["--set", "=3"], "KEY=VALUE"),
    "set unparsable value": (NAV + ["--set", "hidden_sizes=[64,"], "cannot parse value"),
    # values and types
    "lr not a number": (NAV + ["--set", "inner_lr=fast"], "'inner_lr'"),
    "lr negative": (NAV + ["--set", "inner_lr=-0.1"], "'inner_lr'"),
    "batch fractional": (NAV + ["--set", "meta_batch_size=2.5"], "'meta_batch_size'"),
    "batch zero": (NAV + ["--set", "meta_batch_size=0"], "'meta_batch_size'"),
    "episodes negative": (NAV + ["--set", "fast_batch_size=-5"], "'fast_batch_size'"),
    "horizon zero": (NAV + ["--set", "horizon=0"], "'horizon'"),
    "first_order not bool": (NAV + ["--set", "first_order=maybe"], "'first_order'"),
    "gamma above one": (NAV + ["--set", "gamma=1.5"], "'gamma'"),
    "gae lambda negative": (NAV + ["--set", "gae_lambda=-1"], "'gae_lambda'"),
    "hidden sizes negative": (NAV + ["--set", "hidden_sizes=[64,-1]"], "'hidden_sizes'"),
    "hidden sizes scalar": (NAV + ["--set", "hidden_sizes=64"], "'hidden_sizes'"),
    "activation unknown": (NAV + ["--set", "activation=sigmoid"], "'activation'"),
    "device unknown": (NAV + ["--device", "tpu"], "'device'"),
    "cuda absent": (NAV + ["--device", "cuda"], "torch.cuda.is_available() is False"),
    "backtrack ratio one": (NAV + ["--set", "ls_backtrack_ratio=1"], "'ls_backtrack_ratio'"),
    "cg iters negative": (NAV + ["--set", "cg_iters=-3"], "'cg_iters'"),
    "max kl zero": (NAV + ["--set", "max_kl=0"], "'max_kl'"),
    "seed negative": (NAV + ["--seed", "-1"], "'seed'"),
    "iterations zero": (NAV + ["--iterations", "0"], "'iterations'"),
    "inner steps zero": (NAV + ["--set", "num_inner_steps=0"], "'num_inner_steps'"),
    "env kwargs not a mapping": (NAV + ["--set", "env_kwargs=[1]"], "'env_kwargs'"),
    "env kwargs unknown keyword": (NAV + ["--set", "env_kwargs={k: 5}"], "unexpected keyword argument 'k'"),
    "env kwargs bad value": (["train", "--env", "bandit", "--set", "env_kwargs={k: 1}"], "k must be an integer >= 2"),
    "regularizers not a mapping": (NAV + ["--set", "regularizers=[l2-anchor]"], "'regularizers'"),
    "eval tasks zero": (NAV + ["--set", "eval_tasks=0"], "'eval_tasks'"),
    # files and paths
    "config missing": (NAV + ["--config", "/no/such.yaml"], "does not exist"),
    "config is a directory": (NAV + ["--config", "/tmp"], "cannot read config file"),
    "resume not a run": (["train", "--resume", "/tmp"], "not a metarl run directory"),
    "evaluate not a run": (["evaluate", "/tmp"], "not a metarl run directory"),
    "plot not a run": (["plot", "/tmp"], "not a metarl run directory"),
    # plugins
    "env plugin raises at import": (["train", "--env", "raising-env"], "package bad-plugins) failed to import"),
    "policy plugin raises at import": (NAV + ["--policy", "raising-policy"], "bad_plugins needs a missing library"),
    "regularizer plugin raises at import": (NAV + ["--regularizer", "raising-regularizer=1"], "failed to import"),
    "env plugin of the wrong type": (["train", "--env", "not-a-family"], "subclass of metarl.tasks.TaskDistribution"),
    "regularizer plugin of the wrong type": (NAV + ["--regularizer", "not-a-regularizer=1"], "Regularizer"),
    "policy returning a tensor": (NAV + ["--policy", "tensor-policy"], "not a torch.distributions.Distribution"),
    "env with unsupported spaces": (["train", "--env", "dict-observations"], "unsupported observation space"),
    "env whose task sampling fails": (["train", "--env", "failing-tasks"], "no tasks today"),
    "regularizer returning a vector": (NAV + ["--regularizer", "vector-regularizer=1"], "not a scalar tensor"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys, with_bad_plugins):
    args, needle = CASES[case]
    logdir = tmp_path / "runs"
    # the small sizes go first so that a case's own --set wins
    code = main(["train", "--logdir", str(logdir), *SMALL, *args[1:]] if args[0] == "train" else args)
    err = capsys.readouterr().err.strip().splitlines()
    problem = [line for line in err if not line.startswith("run directory:")]
    assert code == 2, err
    assert len(problem) == 1 and problem[0].startswith("metarl: error: ") and needle in problem[0], err
    if "vector" not in case:  # everything else fails before a run directory exists
        assert not logdir.exists() or not any(logdir.iterdir())


YAML_CASES = {
    "malformed yaml": ("inner_lr: [0.1\n", "not valid YAML at line"),
    "unknown key in yaml": ("inner_rate: 0.1\n", "unknown config key 'inner_rate' in config file"),
    "yaml not a mapping": ("- inner_lr\n- 0.1\n", "must hold a mapping"),
    "bad value in yaml": ("meta_batch_size: many\n", "'meta_batch_size' in config file"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_config_file(case, tmp_path, capsys):
    text, needle = YAML_CASES[case]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["train", "--env", "navigation-2d", "--config", str(path), "--logdir", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line and str(path) in line


def test_unwritable_logdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "--env", "navigation-2d", "--logdir", str(blocker / "runs"), *SMALL]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot create a run directory" in line


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--checkpoint", "newest"], "--checkpoint must be best, last or an iteration number"),
        (["--checkpoint", "999"], "has no checkpoint '999'"),
    ],
)
def test_bad_checkpoint_choice(finished_run, args, needle, capsys):
    assert main(["evaluate", str(finished_run), *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line


@pytest.mark.parametrize("task,needle", [("{goal: 1}", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_bad_adapt_task(finished_run, task, needle, tmp_path, capsys):
    assert main(["adapt", str(finished_run), "--task", task, "--out", str(tmp_path / "m.zip")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line


def test_resume_without_checkpoint(finished_run, tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.yaml").write_text((finished_run / "config.yaml").read_text())
    assert main(["train", "--resume", str(empty)]) == 2
    assert "has no checkpoint to resume from" in capsys.readouterr().err


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "train", "--env", "navigaton-2d"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnknownNameError" in err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--env", "point-reach"], "but the run's policy was built for"),
        (["--env", "navigation-3d"], "Did you mean 'navigation-2d'"),
        (["--env-kwargs", "[1, 2]"], "env_kwargs: [1, 2] is not a mapping"),
        (["--env-kwargs", "{bad: 1}"], "env 'navigation-2d' (env_kwargs): got an unexpected keyword argument 'bad'"),
    ],
)
def test_bad_evaluation_family(finished_run, args, needle, capsys):
    assert main(["evaluate", str(finished_run), "--tasks", "2", "--steps", "0", *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line
