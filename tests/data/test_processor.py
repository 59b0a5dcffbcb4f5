"""tinyvr.data.processor: pixel values, prompt ids, SFT label masking, collation, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tinyvr.constants import EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tinyvr.data.processor import Processor
from tinyvr.data.template import SYSTEM, build_conversation_prompt, build_prompt
from tinyvr.data.tokenizer import tokenizer_image_token
from tinyvr.errors import CheckpointError, DataError


def conv(question="<image>\nWhich shape moves first?\nA. red circle\nB. blue square",
         answer="<think>The red circle moves first.</think> <answer>A</answer>"):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def supervised(ids, labels):
    return [i for i, l in zip(ids, labels) if l != IGNORE_INDEX]


# -- pixels -----------------------------------------------------------------------------------


def test_pixel_values_match_manual_pil_computation(processor):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 48, 80, 3), dtype=np.uint8)  # not square: squashed
    px = processor.frames_to_pixel_values(frames)
    assert px.shape == (3, 3, 32, 32) and px.dtype == torch.float32
    manual = np.stack([np.asarray(Image.fromarray(f).resize((32, 32), Image.BICUBIC)) for f in frames])
    manual = (manual.astype(np.float64) / 255 - 0.5) / 0.5
    assert np.allclose(px.numpy(), manual.transpose(0, 3, 1, 2), atol=1e-6)
    assert px.min() >= -1 and px.max() <= 1


def test_pixel_values_channels_first_without_resize(processor):
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 0, 51
    px = processor.frames_to_pixel_values(torch.from_numpy(frames))  # torch uint8 accepted too
    assert torch.all(px[:, 0] == 1.0) and torch.all(px[:, 1] == -1.0)
    assert torch.allclose(px[:, 2], torch.tensor(51 / 127.5 - 1))


def test_pixel_values_per_channel_mean_std(tiny_tokenizer):
    p = Processor(tiny_tokenizer, 4, 1, image_mean=(0.1, 0.2, 0.3), image_std=(0.5, 0.6, 0.7))
    frames = np.random.default_rng(1).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    expected = (frames / 255 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.6, 0.7])
    assert np.allclose(p.frames_to_pixel_values(frames).numpy(), expected.transpose(0, 3, 1, 2), atol=1e-6)


def test_pixel_values_reject_float_frames(processor):
    with pytest.raises(ValueError):
        processor.frames_to_pixel_values(np.zeros((2, 8, 8, 3), np.float32))


def test_load_video(processor, coded_videos):
    px = processor.load_video(coded_videos["mp4"])
    assert px.shape == (8, 3, 32, 32)
    px_bound = processor.load_video(coded_videos["mp4"], start=1.0, end=2.0)
    assert px_bound.shape == (8, 3, 32, 32) and not torch.equal(px, px_bound)


# -- prompt ids and labels --------------------------------------------------------------------


def test_encode_prompt_token_layout(processor, tiny_tokenizer):
    ids = processor.encode_prompt("What moves?")
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    # §4.1: tok("SYSTEM USER: "), -200, tok("\n{question} ASSISTANT:")
    assert ids == enc(SYSTEM + " USER: ") + [IMAGE_TOKEN_INDEX] + enc("\nWhat moves? ASSISTANT:")
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert processor.decode(ids) == build_prompt("What moves?").replace("<image>", "")


@pytest.mark.parametrize("answer", ["A", "<think>The red circle moves first.</think> <answer>A</answer>",
                                    "It moves left, then stops.\nSo: B"])
def test_labels_supervise_exactly_the_answer_and_eos(processor, tiny_tokenizer, answer):
    ids, labels = processor.encode_conversation(conv(answer=answer))
    assert len(ids) == len(labels) and ids.count(IMAGE_TOKEN_INDEX) == 1
    target = supervised(ids, labels)
    # the first answer token carries the space after "ASSISTANT:", as in the reference
    assert processor.decode(target, skip_special_tokens=False) == " " + answer + EOS_TOKEN
    assert target[-1] == tiny_tokenizer.eos_token_id and ids[-1] == tiny_tokenizer.eos_token_id
    # everything before the answer is masked, and it is one contiguous suffix
    first = labels.index(target[0])
    assert all(l == IGNORE_INDEX for l in labels[:first])
    assert labels[first:] == ids[first:]
    # ids equal the joint tokenisation of the whole training text
    assert ids == tokenizer_image_token(build_conversation_prompt(conv(answer=answer)), tiny_tokenizer)


def test_multi_turn_labels(processor):
    c = conv(answer="A1") + [{"from": "human", "value": "And then?"}, {"from": "gpt", "value": "A2"}]
    ids, labels = processor.encode_conversation(c)
    runs, run = [], []
    for i, l in zip(ids, labels):
        if l != IGNORE_INDEX:
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    runs.append(run)
    assert [processor.decode(r, skip_special_tokens=False) for r in runs] == [
        " A1" + EOS_TOKEN, " A2" + EOS_TOKEN]


def test_invalid_conversation_is_a_data_error(processor):
    with pytest.raises(DataError, match="conversations"):
        processor.encode_conversation([{"from": "human", "value": "no placeholder"}, {"from": "gpt", "value": "A"}])


def test_truncation_warns_and_keeps_the_start_of_the_answer(tiny_tokenizer):
    p = Processor(tiny_tokenizer, 32, 4, max_length=3072)
    full_ids, _ = p.encode_conversation(conv(answer="word " * 50))
    p.max_length = len(full_ids) - 10
    with pytest.warns(UserWarning, match="max_length"):
        ids, labels = p.encode_conversation(conv(answer="word " * 50))
    assert len(ids) == p.max_length and p.num_truncated == 1
    assert ids == full_ids[: p.max_length] and any(l != IGNORE_INDEX for l in labels)
    p.max_length = 5  # cuts before the answer (and the placeholder): unusable sample
    with pytest.warns(UserWarning), pytest.raises(DataError):
        p.encode_conversation(conv())


# -- batching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_padding_and_attention_mask(processor, side):
    eos = processor.eos_token_id
    items = [{"input_ids": [5, 6, eos], "labels": [IGNORE_INDEX, 6, eos]},
             {"input_ids": [7, eos, 8, 9, eos], "labels": [IGNORE_INDEX] * 3 + [9, eos]}]
    out = processor.collate(items, padding_side=side)
    assert out["input_ids"].shape == (2, 5) and out["input_ids"].dtype == torch.long
    # PAD == EOS, yet the real EOS tokens are attended: the mask comes from lengths
    assert out["attention_mask"].sum(1).tolist() == [3, 5]
    row0 = out["input_ids"][0].tolist()
    if side == "right":
        assert row0 == [5, 6, eos, eos, eos]
        assert out["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
        assert out["labels"][0].tolist() == [IGNORE_INDEX, 6, eos, IGNORE_INDEX, IGNORE_INDEX]
    else:
        assert row0 == [eos, eos, 5, 6, eos]
        assert out["attention_mask"][0].tolist() == [0, 0, 1, 1, 1]
        assert out["labels"][0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 6, eos]
    assert out["input_ids"][1].tolist() == [7, eos, 8, 9, eos]


def test_collate_rejects_mixed_labels(processor):
    with pytest.raises(ValueError):
        processor.collate([{"input_ids": [1], "labels": [1]}, {"input_ids": [2]}])


def test_call_generation_mode(processor, coded, coded_videos):
    frames = coded.frames(5)
    out = processor(videos=[frames, coded_videos["mkv"]], text=["short?", "a longer question here?"])
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    assert out["pixel_values"].shape == (2, 8, 3, 32, 32)  # 5 given frames sampled up to 8
    lengths = [len(processor.encode_prompt(q)) for q in ("short?", "a longer question here?")]
    assert out["attention_mask"].sum(1).tolist() == lengths
    assert out["attention_mask"][0, -1] == 1 and out["attention_mask"][0, 0] == 0  # left padded
    assert (out["input_ids"] == IMAGE_TOKEN_INDEX).sum(1).tolist() == [1, 1]


def test_call_training_mode(processor, coded):
    frames = [coded.frames(8), coded.frames(8, first=8)]
    out = processor(videos=frames, conversations=[conv(answer="A"), conv(answer="a much longer answer B")])
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    assert out["pixel_values"].shape == (2, 8, 3, 32, 32)
    assert out["attention_mask"][0, 0] == 1 and out["attention_mask"][0, -1] == 0  # right padded
    assert out["labels"].shape == out["input_ids"].shape
    with pytest.raises(ValueError, match="videos"):
        processor(videos=frames[:1], conversations=[conv(), conv()])


def test_batch_decode_drops_placeholders(processor):
    ids = processor.encode_prompt("Q?")
    assert processor.batch_decode(torch.tensor([ids, ids])) == [processor.decode(ids)] * 2
    assert "<image>" not in processor.decode(ids)


# -- persistence ----------------------------------------------------------------------------------


def test_save_and_from_pretrained(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "processor_config.json").read_text())
    assert cfg["image_size"] == 32 and cfg["num_frames"] == 8 and cfg["image_mean"] == [0.5] * 3
    loaded = Processor.from_pretrained(tmp_path)
    assert (loaded.image_size, loaded.num_frames, loaded.max_length) == (32, 8, 3072)
    assert loaded.encode_conversation(conv()) == processor.encode_conversation(conv())


def test_from_pretrained_needs_sizes_for_a_bare_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="image_size"):
        Processor.from_pretrained(tmp_path)
    p = Processor.from_pretrained(tmp_path, image_size=16, num_frames=4)
    assert (p.image_size, p.num_frames) == (16, 4)
