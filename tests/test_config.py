"""Run-level config: precedence and checking of each layer (components' keys: test_hyperparameters.py)."""

import pytest

from metarl.config import Config, build_config, key_docs, parse_set, parse_weights
from metarl.errors import ConfigError


def test_later_layers_win_and_types_are_checked():
    config = build_config({"inner_lr": 0.05, "gamma": 1}, parse_set(["inner_lr=0.2", "first_order=true"]))
    assert config.inner_lr == 0.2 and config.first_order is True
    assert isinstance(config.gamma, float) and config.gamma == 1.0


@pytest.mark.parametrize(
    "layer,needle",
    [
        ({"metabatch": 3}, "unknown config key 'metabatch'"),
        ({"meta_batch_size": 2.5}, "expected a positive integer"),
        ({"first_order": "yes"}, "expected true or false"),
        ({"gamma": 1.5}, "expected a number in [0, 1]"),
        ({"inner_lr": float("nan")}, "expected a positive number"),
        ({"device": "tpu"}, "cpu, cuda or cuda:N"),
        ({"algo_kwargs": [1, 2]}, "a mapping of keyword arguments"),
        ({"regularizers": {"l2-anchor": "big"}}, "a mapping of regularizer name to a weight or to {weight: W"),
        ({"regularizers": {"l2-anchor": {"weight": "big"}}}, "bad weight 'big' for regularizer 'l2-anchor'"),
        ({"algorithms": {"promp": 3}}, "'algorithms' in config must map learner names to mappings"),
    ],
)
def test_bad_key_or_value_names_it(layer, needle):
    with pytest.raises(ConfigError) as info:
        build_config(layer)
    assert needle in str(info.value)


def test_errors_name_the_layer():
    with pytest.raises(ConfigError, match="in --set"):
        build_config({}, {"gamma": 3}, origins=["config file 'a.yaml'", "--set"])
    with pytest.raises(ConfigError, match="in the 'promp' section of config file 'a.yaml'"):
        build_config({"algo": "promp", "algorithms": {"promp": {"gamma": 3}}}, origins=["config file 'a.yaml'"])


def test_parse_helpers():
    assert parse_set(["meta_batch_size=8", "policy="]) == {"meta_batch_size": 8, "policy": None}
    assert parse_weights(["l2-anchor=0.5", "entropy"]) == {"l2-anchor": 0.5, "entropy": 1.0}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["noequals"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["algo_kwargs.=1"])
    with pytest.raises(ConfigError, match="not a number"):
        parse_weights(["l2-anchor=x"])


def test_replace_checks_again():
    with pytest.raises(ConfigError):
        Config().replace(meta_batch_size=0)


def test_every_run_level_key_is_declared_with_a_doc():
    docs = key_docs()
    assert [d[0] for d in docs] == list(Config().to_dict())
    assert all(doc and allowed for _, _, allowed, doc in docs)
    assert not {"max_kl", "outer_lr", "hidden_sizes", "promp_steps"} & {d[0] for d in docs}
