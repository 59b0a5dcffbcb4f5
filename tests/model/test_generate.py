"""`generate` (HF loop with KV cache) against a cache-free greedy loop written here."""

from __future__ import annotations

import pytest
import torch

from tinyvr.constants import IMAGE_TOKEN_INDEX

EOS = 1  # pad == eos id of the session's tiny config (tests/model/conftest.py)
STEPS = 6
PROMPTS = [
    [5, 6, 7, IMAGE_TOKEN_INDEX, 8, 9, 10, 11, 12, 13],
    [20, IMAGE_TOKEN_INDEX, 21, 22],
    [30, 31, IMAGE_TOKEN_INDEX, 32, 33, 34],
]


def pad_batch(rows, side):
    width = max(map(len, rows))
    ids = [([EOS] * (width - len(r)) + r) if side == "left" else (r + [EOS] * (width - len(r))) for r in rows]
    mask = [([0] * (width - len(r)) + [1] * len(r)) if side == "left" else ([1] * len(r) + [0] * (width - len(r)))
            for r in rows]
    return torch.tensor(ids), torch.tensor(mask)


@torch.no_grad()
def greedy_without_cache(model, ids, mask, video_embeds, steps):
    """Recompute the whole sequence every step; positions from the mask; EOS rows then emit pad."""
    embeds, mask, _, _ = model.prepare_inputs_embeds(ids, mask, video_embeds)
    table = model.get_input_embeddings()
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new = []
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False).logits
        tok = torch.where(done, torch.full_like(done, EOS, dtype=torch.long), logits[:, -1].argmax(-1))
        new.append(tok)
        done |= tok == EOS
        embeds = torch.cat([embeds, table(tok)[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new, dim=1)


@pytest.fixture(scope="module")
def video_embeds(tiny_model, tiny_config):
    g = torch.Generator().manual_seed(3)
    size = tiny_config.vision_config.image_size
    px = torch.rand(len(PROMPTS), tiny_config.num_frames, 3, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        return tiny_model.encode_video(px)


@pytest.fixture(scope="module")
def expected(tiny_model, video_embeds):
    ids, mask = pad_batch(PROMPTS, "left")
    out = greedy_without_cache(tiny_model, ids, mask, video_embeds, STEPS)
    # the check is only meaningful if rows decode different, non-constant continuations
    assert len({tuple(r) for r in out.tolist()}) == len(PROMPTS)
    assert any(len(set(r)) > 1 for r in out.tolist())
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_generate_equals_cache_free_greedy(tiny_model, video_embeds, expected, side):
    ids, mask = pad_batch(PROMPTS, side)
    out = tiny_model.generate(ids, mask, video_embeds=video_embeds, max_new_tokens=STEPS, do_sample=False)
    # only new tokens come back; HF stops early only once every row has emitted EOS
    assert out.shape[0] == len(PROMPTS) and 1 <= out.shape[1] <= STEPS
    if out.shape[1] < STEPS:
        assert (expected[:, : out.shape[1]] == EOS).any(dim=1).all()
    assert torch.equal(out, expected[:, : out.shape[1]])


def test_batched_generate_equals_one_row_at_a_time(tiny_model, video_embeds, expected):
    for r, row in enumerate(PROMPTS):
        single = tiny_model.generate(
            torch.tensor([row]), video_embeds=video_embeds[r : r + 1], max_new_tokens=STEPS, do_sample=False
        )
        n = single.shape[1]
        assert torch.equal(single[0], expected[r, :n])
        assert n == STEPS or single[0, -1] == EOS  # a single row stops exactly at its EOS


def test_generate_from_pixel_values_matches_embeds(tiny_model, pixel_values):
    ids, mask = pad_batch(PROMPTS[:2], "left")
    with torch.no_grad():
        embeds = tiny_model.encode_video(pixel_values)
    a = tiny_model.generate(ids, mask, pixel_values=pixel_values, max_new_tokens=3, do_sample=False)
    b = tiny_model.generate(ids, mask, video_embeds=embeds, max_new_tokens=3, do_sample=False)
    assert torch.equal(a, b)


def test_forward_prefill_then_cached_decode_steps(tiny_model, video_embeds, expected):
    """The path a rollout engine uses: one spliced prefill, then one token per forward with the cache."""
    ids, mask = pad_batch(PROMPTS, "left")
    with torch.no_grad():
        out = tiny_model(ids, mask, video_embeds=video_embeds, use_cache=True)
        _, mask, _, _ = tiny_model.prepare_inputs_embeds(ids, mask, video_embeds)
        cache, tok, done, new = out.cache, out.logits[:, -1].argmax(-1), torch.zeros(len(PROMPTS), dtype=torch.bool), []
        for _ in range(STEPS):
            tok = torch.where(done, torch.full_like(tok, EOS), tok)
            new.append(tok)
            done |= tok == EOS
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # mask spans cache + new token
            out = tiny_model(tok[:, None], mask, past_key_values=cache, use_cache=True)
            cache, tok = out.cache, out.logits[:, -1].argmax(-1)
    assert cache.get_seq_length() == mask.shape[1]
    assert torch.equal(torch.stack(new, dim=1), expected)
