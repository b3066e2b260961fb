"""Config precedence and checking."""

import pytest

from metarl.config import Config, build_config, parse_set, parse_weights
from metarl.errors import ConfigError


def test_later_layers_win_and_types_are_checked():
    config = build_config({"inner_lr": 0.05, "hidden_sizes": [32]}, parse_set(["inner_lr=0.2", "first_order=true"]))
    assert config.inner_lr == 0.2 and config.first_order is True and config.hidden_sizes == [32]
    assert isinstance(build_config({"max_kl": 1}).max_kl, float)


@pytest.mark.parametrize(
    "layer,needle",
    [
        ({"metabatch": 3}, "unknown config key 'metabatch'"),
        ({"meta_batch_size": 2.5}, "expected a positive integer"),
        ({"first_order": "yes"}, "expected true or false"),
        ({"gamma": 1.5}, "expected a number in [0, 1]"),
        ({"activation": "sigmoid"}, "expected one of tanh"),
        ({"hidden_sizes": [64, -1]}, "list of positive integers"),
        ({"ls_backtrack_ratio": 1.0}, "strictly between 0 and 1"),
        ({"device": "tpu"}, "cpu, cuda or cuda:N"),
        ({"regularizers": {"l2-anchor": "big"}}, "mapping of regularizer name to weight"),
    ],
)
def test_bad_key_or_value_names_it(layer, needle):
    with pytest.raises(ConfigError) as info:
        build_config(layer)
    assert needle in str(info.value)


def test_parse_helpers():
    assert parse_set(["hidden_sizes=[8, 8]", "policy="]) == {"hidden_sizes": [8, 8], "policy": None}
    assert parse_weights(["l2-anchor=0.5", "entropy"]) == {"l2-anchor": 0.5, "entropy": 1.0}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["noequals"])
    with pytest.raises(ConfigError, match="not a number"):
        parse_weights(["l2-anchor=x"])


def test_replace_checks_again():
    with pytest.raises(ConfigError):
        Config().replace(cg_iters=0)
