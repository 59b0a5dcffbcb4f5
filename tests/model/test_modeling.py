"""Vision features, video-token splicing, batched-vs-single logits, loss masking, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinyvr.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tinyvr.errors import ConfigError, TinyVRError
from tinyvr.model import TinyVideoForConditionalGeneration, set_trainable

EOS = 1  # pad == eos id of the session's tiny config (tests/model/conftest.py)

# Prompts of different lengths with the placeholder at different offsets.
PROMPTS = [
    [5, 6, 7, IMAGE_TOKEN_INDEX, 8, 9, 10, 11, 12],
    [20, IMAGE_TOKEN_INDEX, 21, 22],
]


def pad_batch(rows, side):
    """Pad with EOS (= pad) on `side`; returns input_ids, attention_mask."""
    width = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        pad = [EOS] * (width - len(row))
        ids.append(pad + row if side == "left" else row + pad)
        ones, zeros = [1] * len(row), [0] * len(pad)
        mask.append(zeros + ones if side == "left" else ones + zeros)
    return torch.tensor(ids), torch.tensor(mask)


@pytest.fixture(scope="module")
def video_embeds(tiny_model, pixel_values):
    with torch.no_grad():
        return tiny_model.encode_video(pixel_values)


def test_vision_features_equal_hidden_state_minus_two(tiny_model, pixel_values):
    with torch.no_grad():
        feats = tiny_model.vision_features(pixel_values)
        states = tiny_model.vision_tower(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states
    b, t = pixel_values.shape[:2]
    per_frame = tiny_model.config.patches_per_frame
    assert feats.shape == (b, t * per_frame, tiny_model.config.vision_config.hidden_size)
    # frame-major flattening of hidden_states[-2] without each frame's token 0
    torch.testing.assert_close(feats, states[-2][:, 1:].reshape(b, t * per_frame, -1), atol=0, rtol=0)


def test_cls_patch_strategy_keeps_every_token(tiny_model, pixel_values):
    cfg = tiny_model.config
    try:
        cfg.vision_feature_select_strategy = "cls_patch"
        with torch.no_grad():
            feats = tiny_model.vision_features(pixel_values[:1])
    finally:
        cfg.vision_feature_select_strategy = "patch"
    assert feats.shape[1] == cfg.num_frames * (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2


def test_three_video_input_levels_agree(tiny_model, pixel_values, video_embeds):
    ids, mask = pad_batch(PROMPTS, "left")
    with torch.no_grad():
        feats = tiny_model.vision_features(pixel_values)
        a = tiny_model(ids, mask, pixel_values=pixel_values).logits
        b = tiny_model(ids, mask, video_features=feats).logits
        c = tiny_model(ids, mask, video_embeds=video_embeds).logits
    assert a.shape == (2, ids.shape[1] - 1 + tiny_model.config.num_video_tokens, 512)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize("side", ["left", "right"])
def test_splice_layout(tiny_model, video_embeds, side):
    ids, mask = pad_batch(PROMPTS, side)
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    n = tiny_model.config.num_video_tokens
    embeds, new_mask, pos, new_labels = tiny_model.prepare_inputs_embeds(ids, mask, video_embeds, labels)
    table = tiny_model.get_input_embeddings().weight
    assert embeds.shape == (2, ids.shape[1] - 1 + n, table.shape[1])
    for r in range(2):
        p = int((ids[r] == IMAGE_TOKEN_INDEX).nonzero())
        # the N video tokens sit exactly where the placeholder was, in order
        assert torch.equal(embeds[r, p : p + n], video_embeds[r])
        assert new_mask[r, p : p + n].eq(1).all() and new_labels[r, p : p + n].eq(IGNORE_INDEX).all()
        # text before / after keeps its ids, mask and labels (pads stay on their side)
        after = torch.arange(p + 1, ids.shape[1])
        assert torch.equal(embeds[r, :p], table[ids[r, :p]])
        assert torch.equal(embeds[r, after + n - 1], table[ids[r, after]])
        assert torch.equal(new_mask[r, :p], mask[r, :p]) and torch.equal(new_mask[r, after + n - 1], mask[r, after])
        assert torch.equal(new_labels[r, after + n - 1], labels[r, after])
        # positions count real tokens only: 0..(real-1) on the real ones, 0 on pads
        real = new_mask[r].bool()
        assert torch.equal(pos[r, real], torch.arange(int(real.sum())))
        assert pos[r, ~real].eq(0).all()
        assert int(real.sum()) == int(mask[r].sum()) - 1 + n


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_logits_equal_single_sample_logits(tiny_model, video_embeds, side):
    ids, mask = pad_batch(PROMPTS, side)
    with torch.no_grad():
        batched = tiny_model(ids, mask, video_embeds=video_embeds).logits
        _, new_mask, _, _ = tiny_model.prepare_inputs_embeds(ids, mask, video_embeds)
        for r, row in enumerate(PROMPTS):
            single = tiny_model(torch.tensor([row]), video_embeds=video_embeds[r : r + 1]).logits[0]
            real = new_mask[r].bool()
            assert single.shape[0] == int(real.sum())
            torch.testing.assert_close(batched[r, real], single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "rows",
    [
        [[5, 6, 7], [8, IMAGE_TOKEN_INDEX, 9]],  # row 0 has no placeholder
        [[5, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX], [8, IMAGE_TOKEN_INDEX, 9]],  # row 0 has two
    ],
)
def test_placeholder_count_errors(tiny_model, video_embeds, rows):
    with pytest.raises(TinyVRError, match="row 0"):
        tiny_model.prepare_inputs_embeds(torch.tensor(rows), None, video_embeds)
    with pytest.raises(ValueError):  # also a ValueError for callers that catch those
        tiny_model(torch.tensor(rows), video_embeds=video_embeds)


def test_video_count_must_match_batch(tiny_model, video_embeds):
    ids, mask = pad_batch(PROMPTS, "left")
    with pytest.raises(TinyVRError, match="one video per row"):
        tiny_model(ids, mask, video_embeds=video_embeds[:1])


def test_placeholder_without_video_is_an_error(tiny_model):
    ids, mask = pad_batch(PROMPTS, "left")
    with pytest.raises(TinyVRError, match="placeholder"):
        tiny_model(ids, mask)


def test_loss_ignores_minus_100_and_video_positions(tiny_model, video_embeds):
    ids, mask = pad_batch(PROMPTS, "right")
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[0, :3] = IGNORE_INDEX  # e.g. a prompt part
    with torch.no_grad():
        out = tiny_model(ids, mask, video_embeds=video_embeds, labels=labels)
        _, _, _, spliced = tiny_model.prepare_inputs_embeds(ids, mask, video_embeds, labels)
    assert spliced.shape == out.logits.shape[:2]
    # standard shifted CE, mean over the positions whose label is not -100
    logits, target = out.logits[:, :-1].reshape(-1, 512), spliced[:, 1:].reshape(-1)
    keep = target != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], target[keep])
    torch.testing.assert_close(out.loss, expected)
    # the placeholder label itself and the video tokens never enter the loss
    # 2 placeholders dropped; row 1's first token has no predecessor after the shift
    assert int(keep.sum()) == int((labels != IGNORE_INDEX).sum()) - 2 - 1
    labels_other = labels.clone()
    labels_other[labels == IMAGE_TOKEN_INDEX] = 3  # whatever sits at the placeholder is ignored
    labels_other[0, :3] = IGNORE_INDEX
    with torch.no_grad():
        again = tiny_model(ids, mask, video_embeds=video_embeds, labels=labels_other).loss
    torch.testing.assert_close(again, out.loss)


def test_text_only_forward_uses_mask_positions(tiny_model):
    # left-padded text-only rows give the same logits as the unpadded row
    with torch.no_grad():
        padded = tiny_model(torch.tensor([[EOS, EOS, 5, 6, 7]]), torch.tensor([[0, 0, 1, 1, 1]])).logits
        plain = tiny_model(torch.tensor([[5, 6, 7]])).logits
    torch.testing.assert_close(padded[0, 2:], plain[0], atol=1e-4, rtol=1e-4)


def test_set_trainable(tiny_config):
    with torch.device("meta"):
        model = TinyVideoForConditionalGeneration(tiny_config)
    assert not any(p.requires_grad for p in model.vision_tower.parameters())  # frozen by default
    assert all(p.requires_grad for p in model.connector.parameters())
    set_trainable(model, ["connector"])
    assert not any(p.requires_grad for p in model.language_model.parameters())
    with pytest.raises(ConfigError, match="projector"):
        set_trainable(model, ["projector"])


def test_save_load_round_trip(tmp_path, tiny_model, pixel_values):
    tiny_model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickle
    loaded = TinyVideoForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask = pad_batch(PROMPTS, "left")
    with torch.no_grad():
        before = tiny_model(ids, mask, pixel_values=pixel_values).logits
        after = loaded(ids, mask, pixel_values=pixel_values).logits
    assert torch.equal(before, after)
    lm = loaded.language_model
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()  # still tied
    assert torch.equal(loaded.connector.position_encoding.table, tiny_model.connector.position_encoding.table)
    assert not any(p.requires_grad for p in loaded.vision_tower.parameters())


def test_fresh_tiny_connector_keeps_videos_apart():
    """A from-scratch model must show the LLM different embeddings for different clips: with the
    reference's unit-normal latents the latent residual swamps the attention path (<1% spread)."""
    from tinyvr.model import TinyVideoForConditionalGeneration, build_config

    g = torch.Generator().manual_seed(3)
    spreads = {}
    for std in (None, 1.0):
        kw = {} if std is None else {"latents_init_std": std}
        config = build_config("tiny", vocab_size=512, **kw)
        torch.manual_seed(0)
        model = TinyVideoForConditionalGeneration(config).eval()
        size = config.vision_config.image_size
        # dark clips with one bright moving square: most patches are background, as in real data
        videos = torch.full((6, config.num_frames, 3, size, size), -0.8)
        for i in range(6):
            for t in range(config.num_frames):
                y, x = [int(v) for v in torch.randint(0, size - 12, (2,), generator=g)]
                videos[i, t, i % 3, y:y + 12, x:x + 12] = 0.9
        with torch.no_grad():
            emb = model.encode_video(videos)  # [6, Q, D]
        spreads[std] = (emb.std(0).mean() / emb.std(dim=(0, 1)).mean()).item()
    assert build_config("tiny", vocab_size=512).latents_init_std == 0.02
    assert spreads[None] > 0.1
    assert spreads[None] > 5 * spreads[1.0]
