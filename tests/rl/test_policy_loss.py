"""Policy loss: aggregation modes by hand, reference gradient, KL estimators, PPO clipping, masks."""

import math

import pytest
import torch

from tinyvr.rl.loss import (
    completion_mask,
    kl_penalty,
    mask_truncated,
    policy_loss,
    selective_log_softmax,
    token_entropy,
)

LOGP = [[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]]
REF = [[-1.1, -2.0, -2.9], [-0.5, -1.0, -3.0]]
MASK = [[1, 1, 0], [1, 1, 1]]
ADV = [2.0, -1.0]
BETA = 0.1


def k3(lp, rf):
    d = rf - lp
    return math.exp(d) - d - 1


def per_token_by_hand():
    return [[-ADV[b] + BETA * k3(LOGP[b][t], REF[b][t]) for t in range(3)] for b in range(2)]


def run(aggregation, **kw):
    return policy_loss(
        torch.tensor(LOGP), torch.tensor(ADV), torch.tensor(MASK), ref_logp=torch.tensor(REF),
        beta=BETA, aggregation=aggregation, **kw,
    )  # fmt: skip


def test_sequence_aggregation_by_hand():
    pt = per_token_by_hand()
    seq = [sum(pt[b][t] for t in range(3) if MASK[b][t]) / sum(MASK[b]) for b in range(2)]
    loss, metrics = run("sequence")
    assert loss.item() == pytest.approx(sum(seq) / 2, rel=1e-6)
    kl_seq = [sum(k3(LOGP[b][t], REF[b][t]) for t in range(3) if MASK[b][t]) / sum(MASK[b]) for b in range(2)]
    assert metrics["kl"] == pytest.approx(sum(kl_seq) / 2, rel=1e-5)
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_fraction"] == 0.0
    assert metrics["pg_loss"] == pytest.approx(-(2.0 - 1.0) / 2)
    assert isinstance(metrics["loss"], float)


def test_token_and_dr_grpo_aggregation_by_hand():
    pt = per_token_by_hand()
    total = sum(pt[b][t] for b in range(2) for t in range(3) if MASK[b][t])
    assert run("token")[0].item() == pytest.approx(total / 5, rel=1e-6)
    assert run("dr_grpo", max_completion_length=4)[0].item() == pytest.approx(total / (2 * 4), rel=1e-6)
    with pytest.raises(ValueError, match="max_completion_length"):
        run("dr_grpo")


def test_reference_gradient_is_advantage_times_grad_logp():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    ids = torch.randint(0, 5, (2, 3))
    mask = torch.tensor(MASK)
    adv = torch.tensor(ADV)
    loss, _ = policy_loss(selective_log_softmax(logits, ids), adv, mask, beta=0.0)
    (g_loss,) = torch.autograd.grad(loss, logits)
    # expected: −Σ_b A_b/B · Σ_t mask_bt/n_b · ∇logp_bt  (sequence aggregation)
    logp = selective_log_softmax(logits, ids)
    w = mask.float() / mask.sum(1, keepdim=True) / 2
    (g_ref,) = torch.autograd.grad(-(adv[:, None] * w * logp).sum(), logits)
    assert torch.allclose(g_loss, g_ref, atol=1e-6)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)  # ratio value is 1


def test_kl_estimators_and_clamp():
    lp, rf = torch.tensor([0.0, -1.0]), torch.tensor([math.log(2.0), -1.0])
    assert kl_penalty(lp, rf).tolist() == pytest.approx([1 - math.log(2.0), 0.0])  # 2 − ln2 − 1
    assert kl_penalty(lp, rf, "k1").tolist() == pytest.approx([-math.log(2.0), 0.0])
    assert kl_penalty(lp, rf, "k2").tolist() == pytest.approx([0.5 * math.log(2.0) ** 2, 0.0])
    # exp(200) overflows fp32 to inf, exp(30) − 31 ≈ 1e13: both clamped to the reference's 100
    big = kl_penalty(torch.tensor([-200.0, -30.0, -4.0]), torch.tensor([0.0, 0.0, 0.0]))
    assert big.tolist() == pytest.approx([100.0, 100.0, math.exp(4) - 5])
    assert kl_penalty(torch.tensor([-200.0]), torch.tensor([0.0]), clamp=None).item() == math.inf
    assert kl_penalty(torch.tensor([-3.0]), torch.tensor([0.0]), clamp=10.0).item() == pytest.approx(10.0)
    lp, rf = torch.randn(100), torch.randn(100)
    assert (kl_penalty(lp, rf) >= 0).all()


def test_beta_zero_skips_reference():
    logp = torch.tensor(LOGP)
    loss0, m0 = policy_loss(logp, torch.tensor(ADV), torch.tensor(MASK), beta=0.0)  # no ref needed
    assert "kl" not in m0
    loss1, m1 = policy_loss(logp, torch.tensor(ADV), torch.tensor(MASK), beta=0.0, ref_logp=torch.tensor(REF))
    assert loss1.item() == loss0.item() and m1["kl"] > 0  # KL only logged
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, torch.tensor(ADV), torch.tensor(MASK), beta=0.01)


@pytest.mark.parametrize(
    "ratio,adv,eps_high,expected_loss,clipped",
    [
        (1.5, 1.0, 0.2, -1.2, True),  # A > 0, ratio above 1+ε: capped
        (1.5, -1.0, 0.2, 1.5, False),  # A < 0, ratio above: pessimistic unclipped branch
        (0.5, 1.0, 0.2, -0.5, False),  # A > 0, ratio below: unclipped
        (0.5, -1.0, 0.2, 0.8, True),  # A < 0, ratio below 1−ε: capped
        (1.5, 1.0, 0.28, -1.28, True),  # asymmetric (DAPO clip-higher)
        (1.1, 1.0, 0.2, -1.1, False),  # inside the trust region
    ],
)
def test_ppo_clipping(ratio, adv, eps_high, expected_loss, clipped):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, m = policy_loss(
        logp, torch.tensor([adv]), torch.ones(1, 1), old_logp=torch.zeros(1, 1), beta=0.0, eps_high=eps_high
    )
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert m["clip_fraction"] == (1.0 if clipped else 0.0)
    assert m["ratio_mean"] == pytest.approx(ratio)
    (g,) = torch.autograd.grad(loss, logp)
    # the clipped branch is constant in logp: no gradient; otherwise d(−r·A)/dlogp = −r·A
    assert g.item() == pytest.approx(0.0 if clipped else -ratio * adv, abs=1e-6)


def test_completion_mask_edge_cases():
    eos = 0
    ids = torch.tensor([[5, 6, 0, 0, 0], [0, 0, 0, 0, 0], [5, 6, 7, 8, 9], [5, 0, 7, 0, 0]])
    mask, truncated = completion_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert truncated.tolist() == [False, False, True, False]
    assert mask_truncated(mask, truncated).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5, [1, 1, 0, 0, 0]]
    empty, tr = completion_mask(torch.zeros(2, 0, dtype=torch.long), eos)
    assert empty.shape == (2, 0) and tr.tolist() == [True, True]


def test_fully_masked_rows_are_left_out_of_the_sequence_mean():
    logp = torch.zeros(2, 2)
    loss, _ = policy_loss(logp, torch.tensor([1.0, 5.0]), torch.tensor([[1, 1], [0, 0]]), beta=0.0)
    assert loss.item() == pytest.approx(-1.0)
    loss, _ = policy_loss(logp, torch.tensor([1.0, 5.0]), torch.zeros(2, 2), beta=0.0)
    assert loss.item() == 0.0 and not math.isnan(loss.item())


def test_selective_log_softmax_fp32_and_chunking():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 11) * 5
    ids = torch.randint(0, 11, (3, 4))
    expected = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(selective_log_softmax(logits, ids), expected, atol=1e-5)
    assert torch.allclose(selective_log_softmax(logits, ids, chunk_rows=2), expected, atol=1e-5)
    out = selective_log_softmax(logits.bfloat16(), ids)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(out, ref, atol=1e-5)


def test_token_entropy():
    logits = torch.zeros(2, 3, 4)  # uniform: ln 4
    logits[1, :, 0] = 100.0  # one-hot: 0
    assert token_entropy(logits, torch.tensor([[1, 1, 1], [0, 0, 0]])).item() == pytest.approx(math.log(4))
    assert token_entropy(logits, torch.ones(2, 3)).item() == pytest.approx(math.log(4) / 2, abs=1e-5)
    assert token_entropy(logits, torch.zeros(2, 3)).item() == 0.0
