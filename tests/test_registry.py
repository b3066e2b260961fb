"""The registry: entry-point discovery, the plugin contract, and how bad plugins are reported.

Needs the example plugin installed (`pip install -e plugins/metarl-example --no-deps`). Broken and
conflicting plugins are fake installed distributions (a `*.dist-info` folder and a module) written to a
tmp dir that is put on `sys.path` (in process) or `PYTHONPATH` (for the CLI subprocess).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import write_distribution
from gymnasium.utils.env_checker import check_env
from torch.func import functional_call

import metarl
from metarl import registry
from metarl.algos.adaptation import adapt
from metarl.config import build_config
from metarl.errors import PluginError, UnknownNameError
from metarl.policies.batched import detach, log_probs, sample_actions, stack, unstack
from metarl.regularizers.base import RegularizerContext
from metarl.sampling import GymVectorTaskEnv, make_vector_env, sample_episodes
from metarl.sampling.advantages import compute_advantages

EXAMPLE = "metarl-example"
EXAMPLE_ENTRIES = {
    "envs": "point-reach",
    "policies": "tiny-gaussian",
    "regularizers": "adapted-entropy",
    "loggers": "jsonl",
}
BUILTINS = {
    "envs": ["navigation-2d", "bandit", "tabular-mdp"],
    "policies": ["gaussian-mlp", "categorical-mlp"],
    "regularizers": ["l2-anchor"],
    "algorithms": ["maml-trpo", "promp", "maml-vpg", "meta-sgd", "e-maml"],
    "loggers": ["tensorboard", "csv", "wandb"],
}
BROKEN_CAUSE = "broken_plugin_mod cannot be imported"
FAKE_MODULES = ("broken_plugin_mod", "broken_plugin_objs", "rival_plugin_mod")


@pytest.fixture(scope="module")
def example() -> None:
    try:
        metadata.distribution(EXAMPLE)
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed: pip install -e plugins/{EXAMPLE} --no-deps")


def fresh(reg: registry.Registry) -> registry.Registry:
    """A registry of the same group that has not discovered anything yet."""
    return registry.Registry(reg.kind, reg.plural, reg.group, reg._check)


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Path:
    """`broken-plugin`: per group one entry whose module raises at import, and a non-family env."""
    write_distribution(
        tmp_path,
        "broken-plugin",
        {
            "metarl.envs": {"broken-env": "broken_plugin_mod:Missing", "not-a-family": "broken_plugin_objs:NotAFamily"},
            "metarl.policies": {"broken-policy": "broken_plugin_mod:Missing"},
            "metarl.regularizers": {"broken-regularizer": "broken_plugin_mod:Missing"},
            "metarl.loggers": {"broken-logger": "broken_plugin_mod:Missing"},
        },
        {
            "broken_plugin_mod": f"raise RuntimeError({BROKEN_CAUSE!r})\n",
            "broken_plugin_objs": """
                class NotAFamily:
                    '''Looks like a task family but does not subclass metarl.TaskDistribution.'''

                    def sample_tasks(self, num_tasks, rng):
                        return [{}] * num_tasks
            """,
        },
    )
    return tmp_path


@pytest.fixture
def on_sys_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Put a folder on sys.path for this test (which also invalidates import and metadata caches)."""
    yield lambda root: monkeypatch.syspath_prepend(str(root))
    for module in FAKE_MODULES:
        sys.modules.pop(module, None)


def rows_by_name(reg: registry.Registry) -> dict[str, registry.PluginStatus]:
    return {row.name: row for row in reg.status()}


# --- the example plugin, found through entry points and satisfying the contract ----------------------


@pytest.mark.parametrize("group, name", EXAMPLE_ENTRIES.items())
def test_example_plugin_is_discovered_through_entry_points(example, group: str, name: str) -> None:
    reg = registry.REGISTRIES[group]
    declared = {ep.name: ep for ep in metadata.entry_points(group=reg.group)}
    assert declared[name].dist.metadata["Name"] == EXAMPLE
    row = rows_by_name(reg)[name]
    assert (row.package, row.version, row.error) == (EXAMPLE, metadata.version(EXAMPLE), None)
    assert reg.load(name).__module__.startswith("metarl_example.")


def test_listing_names_imports_no_plugin(example) -> None:
    code = (
        "import sys; from metarl import registry;"
        "names = [n for r in registry.REGISTRIES.values() for n in r.names()];"
        "assert 'point-reach' in names and 'navigation-2d' in names, names;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('metarl_example', 'metarl_envs', 'torch')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_point_reach_family_contract(example) -> None:
    family_cls = registry.envs.load("point-reach")
    assert issubclass(family_cls, metarl.TaskDistribution)
    family = family_cls()
    tasks = family.sample_tasks(8, np.random.default_rng(3))
    assert len(tasks) == 8 and all(isinstance(task, dict) for task in tasks)
    assert json.loads(json.dumps(tasks)) == tasks
    assert len({json.dumps(task) for task in tasks}) == 8
    assert family.sample_tasks(8, np.random.default_rng(3)) == tasks
    assert family.sample_tasks(8, np.random.default_rng(4)) != tasks
    for task in tasks[:2]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any check_env warning fails the test
            check_env(family.make_env(task), skip_render_check=True)


def test_point_reach_reward_and_shipped_config(example) -> None:
    family = registry.envs.load("point-reach")()
    env = family.make_env({"target": 0.5})
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0], dtype=np.float32))
    assert reward == pytest.approx(-abs(obs[0] - 0.5) - 0.01, abs=1e-6)
    assert obs[1] > 0 and not terminated and not truncated
    config = build_config(family.reference_config())
    assert (config.env, config.meta_batch_size, config.fast_batch_size, config.horizon) == ("point-reach", 10, 10, 50)


def test_tiny_gaussian_policy_contract(example) -> None:
    policy_cls = registry.policies.load("tiny-gaussian")
    assert issubclass(policy_cls, torch.nn.Module)
    policy = policy_cls(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,)))
    obs = torch.randn(4, 5, 3)
    dist = policy(obs)
    assert isinstance(dist, torch.distributions.Distribution)
    actions = dist.sample()
    assert actions.shape == (4, 5, 2)
    assert dist.log_prob(actions).shape == (4, 5)
    assert dist.stddev.unique().numel() > 1, "the std should depend on the observation"
    # One parameter set per task under functional_call + vmap, as the core calls it.
    params = stack(detach(dict(policy.named_parameters())), 4)
    torch.testing.assert_close(log_probs(policy, params, obs, actions), dist.log_prob(actions))
    assert sample_actions(policy, params, obs).shape == (4, 5, 2)


@pytest.fixture(scope="module")
def point_reach_batch(example) -> tuple:
    """tiny-gaussian on 3 point-reach tasks: θ and train/valid batches sampled on the generic path."""
    torch.manual_seed(0)
    family = registry.envs.load("point-reach")()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    env = make_vector_env(family, tasks, 2, torch.device("cpu"))
    assert isinstance(env, GymVectorTaskEnv)
    policy = registry.policies.load("tiny-gaussian")(env.observation_space, env.action_space)
    params = dict(policy.named_parameters())
    batches = []
    for seed in (0, 1):
        episodes = sample_episodes(policy, stack(detach(params), len(tasks)), env, 20, seed)
        batches.append(episodes.with_advantages(compute_advantages(episodes, 0.99, 1.0, normalize=True)))
    return policy, params, *batches


@pytest.mark.parametrize("first_order", [False, True])
def test_adapted_entropy_gradient_reaches_theta_through_adaptation(point_reach_batch, first_order: bool) -> None:
    policy, params, train, valid = point_reach_batch
    regularizer_cls = registry.regularizers.load("adapted-entropy")
    assert issubclass(regularizer_cls, metarl.Regularizer)
    adapted = unstack(adapt(policy, params, train, lr=0.5, num_steps=1, first_order=first_order).params)
    value = regularizer_cls()(RegularizerContext(policy, params, adapted, train.tasks(), valid.tasks()))
    assert value.shape == () and torch.isfinite(value)

    def mean_entropy(task_params: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        per_task = [
            functional_call(policy, p, (batch.observations,)).entropy()[batch.mask.bool()].mean()
            for p, batch in zip(task_params, valid.tasks())
        ]
        return torch.stack(per_task).mean()

    torch.testing.assert_close(value, -mean_entropy(adapted))
    assert not torch.allclose(value, -mean_entropy([params] * len(adapted))), "entropy must be at θᵢ', not θ"

    grads = dict(zip(params, torch.autograd.grad(value, list(params.values()), allow_unused=True)))
    assert grads["std.weight"] is not None and grads["std.weight"].abs().sum() > 0
    # The entropy does not depend on the mean head; θ's mean head reaches it only through the inner
    # step's second-order term, which first-order adaptation drops.
    mean_head = [grads["mean.weight"], grads["mean.bias"]]
    if first_order:
        assert all(g is None or g.abs().sum() == 0 for g in mean_head)
    else:
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in mean_head)


# --- built-ins, unknown names ------------------------------------------------------------------------


@pytest.mark.parametrize("group, name", [(group, name) for group, names in BUILTINS.items() for name in names])
def test_builtins_come_from_package_metarl(group: str, name: str) -> None:
    row = rows_by_name(registry.REGISTRIES[group])[name]
    assert (row.package, row.version, row.error) == ("metarl", metadata.version("metarl"), None)


def test_unknown_name_suggests_the_close_one_and_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        registry.envs.load("navigation2d")
    message = str(info.value)
    assert "Did you mean 'navigation-2d'" in message
    assert all(name in message for name in registry.envs.names())
    with pytest.raises(UnknownNameError) as info:
        registry.policies.load("zzz")
    assert "Did you mean" not in str(info.value) and "gaussian-mlp" in str(info.value)


# --- broken and conflicting plugins ------------------------------------------------------------------


def test_broken_plugin_error_names_package_and_cause(broken_plugin: Path, on_sys_path) -> None:
    on_sys_path(broken_plugin)
    envs = fresh(registry.envs)
    with pytest.raises(PluginError) as info:
        envs.load("broken-env")
    message = str(info.value)
    assert all(part in message for part in ("broken-env", "broken-plugin", "RuntimeError", BROKEN_CAUSE))
    with pytest.raises(PluginError) as info:
        envs.load("not-a-family")
    assert all(part in str(info.value) for part in ("not-a-family", "broken-plugin", "TaskDistribution"))

    rows = rows_by_name(envs)
    for name in ("broken-env", "not-a-family"):
        assert (rows[name].package, rows[name].version) == ("broken-plugin", "0.1")
    assert BROKEN_CAUSE in rows["broken-env"].error
    assert "TaskDistribution" in rows["not-a-family"].error
    good = [row for name, row in rows.items() if name not in ("broken-env", "not-a-family")]
    assert {row.name for row in good} >= set(BUILTINS["envs"])
    assert all(row.error is None for row in good)
    assert issubclass(envs.load("navigation-2d"), metarl.TaskDistribution)


def test_two_packages_claiming_one_name_is_an_error_naming_both(tmp_path: Path, on_sys_path) -> None:
    write_distribution(
        tmp_path,
        "rival-plugin",
        {"metarl.envs": {"navigation-2d": "rival_plugin_mod:Navigation"}},
        {"rival_plugin_mod": "from metarl.tasks import TaskDistribution\n\nclass Navigation(TaskDistribution): ...\n"},
    )
    on_sys_path(tmp_path)
    envs = fresh(registry.envs)
    with pytest.raises(PluginError) as info:
        envs.load("navigation-2d")
    message = str(info.value)
    assert "navigation-2d" in message and "rival-plugin" in message
    assert re.search(r"(?<![\w.-])metarl(?![\w.-])", message), message
    assert rows_by_name(envs)["navigation-2d"].error == message
    assert envs.load("bandit") is not None
    assert "rival_plugin_mod" not in sys.modules, "a conflict is found before importing either side"


@pytest.mark.parametrize("value, plugins_on", [("1", False), ("0", True), ("", True)])
def test_disable_autoload_keeps_only_metarl(
    broken_plugin: Path, on_sys_path, monkeypatch: pytest.MonkeyPatch, value: str, plugins_on: bool
) -> None:
    on_sys_path(broken_plugin)
    monkeypatch.setenv("METARL_DISABLE_PLUGIN_AUTOLOAD", value)
    for group, reg in registry.REGISTRIES.items():
        rows = fresh(reg).status()
        assert {row.name for row in rows} >= set(BUILTINS[group])
        packages = {row.package for row in rows}
        if plugins_on:
            # broken-plugin declares envs, policies, regularizers and loggers; nothing else claims algorithms
            assert "broken-plugin" in packages or group == "algorithms"
        else:
            assert packages == {"metarl"} and all(row.error is None for row in rows)


# --- `metarl list` in a subprocess -------------------------------------------------------------------


@pytest.mark.parametrize("group", EXAMPLE_ENTRIES)
def test_cli_list_shows_broken_plugins_and_exits_zero(example, broken_plugin: Path, group: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(broken_plugin), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "list", group],
        capture_output=True,
        text=True,
        env=env,
        cwd=broken_plugin,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    def row(name: str) -> str:
        lines = [
            line for line in result.stdout.splitlines() if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line)
        ]
        assert len(lines) == 1, f"expected one row for {name!r} in:\n{result.stdout}"
        return lines[0]

    ok = re.compile(r"\bok\b")
    plugin_row = row(EXAMPLE_ENTRIES[group])
    assert EXAMPLE in plugin_row and metadata.version(EXAMPLE) in plugin_row and ok.search(plugin_row)
    builtin_row = row(BUILTINS[group][0])
    assert re.search(r"(?<![\w.-])metarl(?![\w.-])", builtin_row) and ok.search(builtin_row)
    broken_name = {
        "envs": "broken-env",
        "policies": "broken-policy",
        "regularizers": "broken-regularizer",
        "loggers": "broken-logger",
    }[group]
    broken_row = row(broken_name)
    assert "broken-plugin" in broken_row and "0.1" in broken_row and "broken:" in broken_row
    assert BROKEN_CAUSE in broken_row
    if group == "envs":
        assert "broken:" in row("not-a-family") and "TaskDistribution" in row("not-a-family")
