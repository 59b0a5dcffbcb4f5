"""Group advantages: hand-computed GRPO values, noise, scaling variants, zero-std groups."""

import math
import statistics

import pytest
import torch

from tinyvr.errors import ConfigError
from tinyvr.rl.advantages import (
    filter_zero_std_groups,
    get_advantage_estimator,
    group_advantages,
    group_rows,
    zero_std_groups,
)

R = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


def test_reference_group_normalisation_by_hand():
    adv = group_advantages(torch.tensor(R), 4, noise_std=0.0)
    std = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)  # unbiased (N−1)
    expected = [d / (std + 1e-4) for d in (-1.5, -0.5, 0.5, 1.5)] + [0.0] * 4
    assert adv.shape == (8,) and adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[4:].tolist() == [0.0] * 4  # an all-equal group is exactly 0 without noise


def test_flat_and_2d_inputs_agree_and_biased_std():
    flat = torch.tensor(R).view(-1)
    assert torch.equal(group_advantages(flat, 4, noise_std=0), group_advantages(torch.tensor(R), 4, noise_std=0))
    adv = group_advantages(flat, 4, noise_std=0, unbiased=False, eps=0.0)
    pstd = statistics.pstdev([1, 2, 3, 4])
    assert adv[:4].tolist() == pytest.approx([d / pstd for d in (-1.5, -0.5, 0.5, 1.5)], rel=1e-6)


def test_noise_is_reproducible_and_added_to_zero_std_groups():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = group_advantages(torch.tensor(R), 4, generator=g1)
    b = group_advantages(torch.tensor(R), 4, generator=g2)
    assert torch.equal(a, b)
    noise = 0.02 * torch.randn(8, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a[4:], noise[4:])  # pure noise where rewards are all equal
    assert torch.allclose(a - noise, group_advantages(torch.tensor(R), 4, noise_std=0), atol=1e-6)


def test_noise_std_is_noise_std():
    adv = group_advantages(torch.zeros(4000, 8), 8, generator=torch.Generator().manual_seed(0))
    assert adv.std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(adv.mean().item()) < 0.002


def test_batch_and_none_scaling():
    r = torch.tensor(R)
    centered = [-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0]
    bstd = statistics.stdev([1, 2, 3, 4, 0, 0, 0, 0])
    batch = group_advantages(r, 4, scale="batch", noise_std=0)
    assert batch.tolist() == pytest.approx([c / (bstd + 1e-4) for c in centered], rel=1e-6)
    none = group_advantages(r, 4, scale="none", noise_std=0)
    assert none.tolist() == pytest.approx(centered)
    assert torch.equal(get_advantage_estimator("dr_grpo")(r, 4, noise_std=0), none)
    assert torch.equal(get_advantage_estimator("grpo_batch_std")(r, 4, noise_std=0), batch)
    assert torch.equal(get_advantage_estimator("grpo")(r, 4, noise_std=0), group_advantages(r, 4, noise_std=0))


def test_zero_std_groups_and_dynamic_sampling_filter():
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-2.0, -2.0], [0.5, 0.5 + 1e-8]])
    assert zero_std_groups(r, 2).tolist() == [True, False, True, True]
    kept = filter_zero_std_groups(r.view(-1), 2)
    assert kept.tolist() == [1]
    assert group_rows(kept, 2).tolist() == [2, 3]
    assert group_rows(torch.tensor([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]


def test_bad_inputs():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(7), 4)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(3), 1)  # unbiased std of one value
    with pytest.raises(ConfigError, match="group.*batch.*none"):
        group_advantages(torch.zeros(4), 4, scale="rloo")
