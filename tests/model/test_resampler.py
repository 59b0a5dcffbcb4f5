"""GroupResampler against an independent, loop-based re-computation of spec §1.3."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tinyvr.model import GroupResampler
from tinyvr.model.resampler import sinusoidal_position_encoding

DIMS = dict(vision_hidden_size=24, dim=32, num_queries=16, group=4, depth=2, heads=2, head_dim=8, ff_mult=3)


def reference_pe(num_positions: int, dim: int) -> torch.Tensor:
    """Spec formula in float64 with the math module, then the reference's fp16 rounding."""
    pe = torch.zeros(num_positions, dim, dtype=torch.float64)
    for p in range(num_positions):
        for i in range(dim // 2):
            angle = p * math.exp(-2 * i * math.log(10000.0) / dim)
            pe[p, 2 * i], pe[p, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe.to(torch.float16).to(torch.float32)


def reference_forward(r: GroupResampler, features: torch.Tensor) -> torch.Tensor:
    """One chunk at a time, explicit einsum attention with max subtraction (no module calls)."""
    x = features @ r.linear.weight.T + r.linear.bias
    b, n, d = x.shape
    g = r.group
    sizes = [n // g + (1 if i < n % g else 0) for i in range(g)]
    outs, start = [], 0
    for size in sizes:
        media = x[:, start : start + size]
        start += size
        lat = r.latents.unsqueeze(0).expand(b, -1, -1)
        for attn, ff in r.layers:
            h, dh = attn.heads, attn.head_dim
            m_hat = F.layer_norm(media, (d,), attn.norm_media.weight, attn.norm_media.bias, 1e-5)
            l_hat = F.layer_norm(lat, (d,), attn.norm_latents.weight, attn.norm_latents.bias, 1e-5)
            q = (l_hat @ attn.to_q.weight.T).view(b, -1, h, dh) * dh**-0.5
            kv = torch.cat([m_hat, l_hat], dim=1) @ attn.to_kv.weight.T
            k = kv[..., : h * dh].reshape(b, -1, h, dh)
            v = kv[..., h * dh :].reshape(b, -1, h, dh)
            sim = torch.einsum("bihd,bjhd->bhij", q, k)
            sim = sim - sim.amax(dim=-1, keepdim=True)
            prob = sim.exp() / sim.exp().sum(dim=-1, keepdim=True)
            o = torch.einsum("bhij,bjhd->bihd", prob, v).reshape(b, -1, h * dh)
            lat = o @ attn.to_out.weight.T + lat
            f = F.layer_norm(lat, (d,), ff[0].weight, ff[0].bias, 1e-5) @ ff[1].weight.T
            lat = F.gelu(f) @ ff[3].weight.T + lat
        outs.append(F.layer_norm(lat, (d,), r.norm.weight, r.norm.bias, 1e-5))
    return torch.cat(outs, dim=1) + reference_pe(r.num_queries, d)


@pytest.fixture(scope="module")
def resampler():
    torch.manual_seed(0)
    r = GroupResampler(**DIMS)
    with torch.no_grad():  # random everything, LayerNorm affine included, so no term is trivial
        for p in r.parameters():
            p.normal_(0.0, 0.4)
    return r


# N = 20: equal chunks of 5; N = 23: chunks 6,6,6,5; N = 3: one empty chunk (latents only)
@pytest.mark.parametrize("n_tokens", [20, 23, 3])
def test_matches_loop_reference(resampler, n_tokens):
    x = torch.randn(3, n_tokens, DIMS["vision_hidden_size"], generator=torch.Generator().manual_seed(n_tokens))
    with torch.no_grad():
        out = resampler(x)
        ref = reference_forward(resampler, x)
    assert out.shape == (3, DIMS["num_queries"], DIMS["dim"])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_groups_are_independent_and_ordered(resampler):
    # Changing tokens of the 2nd chunk (sizes 6,6,6,5 for N=23) must change only output group 1.
    x = torch.randn(1, 23, DIMS["vision_hidden_size"])
    y = x.clone()
    y[:, 6:12] += 1.0
    with torch.no_grad():
        a, b = resampler(x), resampler(y)
    q = DIMS["num_queries"] // DIMS["group"]
    changed = (a - b).abs().amax(dim=-1).view(DIMS["group"], q).amax(dim=-1) > 1e-6
    assert changed.tolist() == [False, True, False, False]


def test_gradients_reach_every_parameter(resampler):
    x = torch.randn(2, 23, DIMS["vision_hidden_size"], requires_grad=True)
    resampler.zero_grad()
    resampler(x).square().sum().backward()
    missing = [n for n, p in resampler.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing and x.grad is not None
    resampler.zero_grad()


def test_position_encoding_values_and_fp16_rounding():
    table = sinusoidal_position_encoding(40, 32)
    torch.testing.assert_close(table, reference_pe(40, 32), atol=1e-3, rtol=0)
    assert torch.equal(table.half().float(), table)  # every value is an fp16 value
    assert table[0, 0::2].eq(0).all() and table[0, 1::2].eq(1).all()
    unrounded = torch.sin(torch.tensor(1.0) * math.exp(-2 * 1 * math.log(10000.0) / 32))
    assert table[1, 2] != unrounded  # the fp32 value was indeed rounded
    assert abs(float(table[1, 2]) - float(unrounded)) < 2**-11


def test_position_encoding_is_not_in_state_dict(resampler):
    assert not any("position_encoding" in k for k in resampler.state_dict())
    assert resampler.position_encoding.table.shape == (DIMS["num_queries"], DIMS["dim"])


def test_3b_connector_keys_and_parameter_count():
    """Reference shapes (spec §2.5) under the rule `connector._connector.X` <-> `connector.X`."""
    with torch.device("meta"):
        r = GroupResampler(1152, 2048, num_queries=512, group=16, depth=3, heads=8, head_dim=64, ff_mult=4)
    expected = {"latents": (32, 2048), "linear.weight": (2048, 1152), "linear.bias": (2048,),
                "norm.weight": (2048,), "norm.bias": (2048,)}
    for i in range(3):
        expected.update({
            f"layers.{i}.0.norm_media.weight": (2048,), f"layers.{i}.0.norm_media.bias": (2048,),
            f"layers.{i}.0.norm_latents.weight": (2048,), f"layers.{i}.0.norm_latents.bias": (2048,),
            f"layers.{i}.0.to_q.weight": (512, 2048), f"layers.{i}.0.to_kv.weight": (1024, 2048),
            f"layers.{i}.0.to_out.weight": (2048, 512),
            f"layers.{i}.1.0.weight": (2048,), f"layers.{i}.1.0.bias": (2048,),
            f"layers.{i}.1.1.weight": (8192, 2048), f"layers.{i}.1.3.weight": (2048, 8192),
        })
    assert {k: tuple(v.shape) for k, v in r.state_dict().items()} == expected
    assert sum(p.numel() for p in r.parameters()) == 115_714_048


def test_rejects_indivisible_queries():
    with pytest.raises(ValueError, match="divisible"):
        GroupResampler(8, 16, num_queries=10, group=4, depth=1, heads=1, head_dim=4, ff_mult=1)
