"""Registries: names resolve, unknown names list the valid ones, user rewards by import path."""

import sys

import pytest

from tinyvr.errors import ConfigError
from tinyvr.rl.advantages import ADVANTAGE_ESTIMATORS, get_advantage_estimator
from tinyvr.rl.loss import KL_ESTIMATORS, LOSS_AGGREGATIONS, get_kl_estimator, get_loss_aggregation, policy_loss
from tinyvr.rl.rewards import REWARD_FUNCTIONS, get_reward_fn, tinyllava_r1_reward


@pytest.mark.parametrize(
    "lookup,registry",
    [
        (get_reward_fn, REWARD_FUNCTIONS),
        (get_advantage_estimator, ADVANTAGE_ESTIMATORS),
        (get_kl_estimator, KL_ESTIMATORS),
        (get_loss_aggregation, LOSS_AGGREGATIONS),
    ],
)
def test_lookup_and_unknown_name_lists_valid_names(lookup, registry):
    for name, fn in registry.items():
        assert lookup(name) is fn
    with pytest.raises(ConfigError) as e:
        lookup("no_such_thing")
    assert "no_such_thing" in str(e.value)
    assert all(name in str(e.value) for name in registry)


def test_expected_names_registered():
    assert REWARD_FUNCTIONS["tinyllava_r1"] is tinyllava_r1_reward
    assert {"accuracy", "format", "tinyllava_r1"} <= set(REWARD_FUNCTIONS)
    assert {"grpo", "grpo_batch_std", "dr_grpo"} <= set(ADVANTAGE_ESTIMATORS)
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}
    assert set(LOSS_AGGREGATIONS) == {"sequence", "token", "dr_grpo"}


def test_policy_loss_rejects_unknown_names():
    import torch

    x = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match="dr_grpo.*sequence.*token"):
        policy_loss(x, torch.zeros(1), torch.ones(1, 2), beta=0.0, aggregation="seq")
    with pytest.raises(ConfigError, match="k1.*k2.*k3"):
        policy_loss(x, torch.zeros(1), torch.ones(1, 2), beta=0.0, kl_estimator="k4")


USER_MODULE = '''
NOT_CALLABLE = 3

def length_reward(completions, **columns):
    return [float(len(c)) for c in completions]
'''


def test_user_reward_by_import_path(tmp_path, monkeypatch):
    name = "tinyvr_test_user_rewards_mod"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert name not in sys.modules
    fn = get_reward_fn(f"{name}:length_reward")
    assert fn(["ab", "abcd"], solution=["x", "y"]) == [2.0, 4.0]
    with pytest.raises(ConfigError, match="not callable"):
        get_reward_fn(f"{name}:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="has no 'missing'"):
        get_reward_fn(f"{name}:missing")
    with pytest.raises(ConfigError, match="cannot import"):
        get_reward_fn("tinyvr_no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="module:function"):
        get_reward_fn(":f")
