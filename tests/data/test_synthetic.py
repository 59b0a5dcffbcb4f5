"""tinyvr.data.synthetic: files, formats, determinism, answers re-derived from pixels."""

from __future__ import annotations

import hashlib
import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tinyvr.data.synthetic import (
    DEFAULT_SIZES,
    FAMILIES,
    HELDOUT_COMBOS,
    SPLITS,
    answer_from_frames,
    decode_mp4,
    encode_mp4,
    format_problem,
    generate_dataset,
    generate_item,
    parse_sizes,
)
from tinyvr.data.synthetic.scene import FPS_CHOICES, MAX_FRAMES, MIN_FRAMES, sample_indices
from tinyvr.data.synthetic.questions import count_window
from tinyvr.errors import ConfigError

SIZES = {"pretrain": 4, "sft": 10, "rl": 6, "test": 4, "test_heldout": 6}
TRAIN_SPLITS = ("pretrain", "sft", "rl", "coldstart", "test")  # test: in distribution, no held-out combos
GRPO_KEYS = {
    "problem",
    "solution",
    "video_filename",
    "id",
    "family",
    "question",
    "options",
    "answer",
    "num_frames",
    "fps",
    "reasoning",
}
THINK = re.compile(r"^<think>(.+)</think> <answer>([A-E])</answer>$", re.S)


def _tree_sha(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_a")
    manifest = generate_dataset(out, seed=0, sizes=SIZES, workers=1, progress=False)
    return out, manifest


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes_for_any_worker_count(dataset, tmp_path):
    out_a, manifest_a = dataset
    out_b = tmp_path / "b"
    manifest_b = generate_dataset(out_b, seed=0, sizes=SIZES, workers=2, progress=False)
    assert manifest_a == manifest_b
    assert _tree_sha(out_a) == _tree_sha(out_b)


def test_different_seed_different_files(dataset, tmp_path):
    _, manifest_a = dataset
    small = {"pretrain": 1, "sft": 2, "rl": 1, "test": 1, "test_heldout": 1}
    m = generate_dataset(tmp_path / "c", seed=1, sizes=small, workers=1, progress=False, coldstart_size=1)
    for name in ("videos/sft/sft-00000.mp4", "videos/sft/sft-00001.mp4", "videos/rl/rl-00000.mp4"):
        assert m["files"][name] != manifest_a["files"][name]


def test_manifest_checksums_match_files(dataset):
    out, manifest = dataset
    on_disk = _tree_sha(out)
    on_disk.pop("manifest.json")
    assert manifest["files"] == on_disk
    assert manifest["counts"] == {**SIZES, "coldstart": 16}
    assert manifest["seed"] == 0 and manifest["frame_size"] == 64
    assert {c["colour"] + " " + c["shape"] for c in manifest["heldout"]["combos"]} == {
        f"{c} {s}" for c, s in HELDOUT_COMBOS
    }


# ---------------------------------------------------------------------------------------------
# videos


def test_videos_decode_to_declared_frames_and_fps(dataset):
    out, manifest = dataset
    checked = 0
    for split in ("rl", "test", "test_heldout"):
        for row in _jsonl(out / f"{split}.jsonl"):
            path = out / row["video_filename"][2:]
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                assert stream.average_rate == Fraction(row["fps"]).limit_denominator(1000)
                assert stream.codec_context.name == "h264"
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert len(frames) == row["num_frames"]
            assert frames[0].shape == (64, 64, 3)
            assert MIN_FRAMES <= row["num_frames"] <= MAX_FRAMES and row["fps"] in FPS_CHOICES
            assert 2.0 <= row["num_frames"] / row["fps"] <= 10.0
            checked += 1
    assert checked == SIZES["rl"] + SIZES["test"] + SIZES["test_heldout"]
    # the other splits' clips decode too, with a frame count / rate from the same ranges
    for rel in manifest["files"]:
        if rel.startswith(("videos/pretrain/", "videos/sft/", "videos/coldstart/")) and rel.endswith("0.mp4"):
            frames, rate = decode_mp4(out / rel)
            assert MIN_FRAMES <= len(frames) <= MAX_FRAMES and float(rate) in FPS_CHOICES


def test_every_item_has_its_own_clip(dataset):
    _, manifest = dataset
    videos = {k: v for k, v in manifest["files"].items() if k.endswith(".mp4")}
    assert len(videos) == sum(SIZES.values()) + 16
    assert len(set(videos.values())) == len(videos)  # no clip shared within or across splits
    for rel in videos:
        split = rel.split("/")[1]
        assert Path(rel).name.startswith(split + "-")


# ---------------------------------------------------------------------------------------------
# formats


def test_grpo_jsonl_fields(dataset):
    out, _ = dataset
    for split in ("rl", "test", "test_heldout"):
        rows = _jsonl(out / f"{split}.jsonl")
        assert len(rows) == SIZES[split]
        for row in rows:
            assert GRPO_KEYS <= set(row)
            assert row["family"] in FAMILIES
            assert len(row["options"]) == 5 and len(set(row["options"])) == 5
            assert row["problem"] == format_problem(row["question"], row["options"])
            assert row["problem"].startswith(row["question"] + "\nOptions:\nA. ")
            assert row["solution"] == f"<answer>{row['answer']}</answer>"
            assert row["video_filename"] == f"./videos/{split}/{row['id']}.mp4"
            assert (out / row["video_filename"][2:]).is_file()
            # the trace ends with the option check, whose last line is the answer's
            last = row["reasoning"].split("\n")[-1]
            assert last == f"{row['answer']}. {row['options']['ABCDE'.index(row['answer'])]}: yes", row["reasoning"]


def test_llava_json_files(dataset):
    out, _ = dataset
    pre = json.loads((out / "pretrain.json").read_text())
    assert len(pre) == SIZES["pretrain"]
    for row in pre:
        human, gpt = row["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and len(gpt["value"].split()) >= 8
        assert row["video"] == f"videos/pretrain/{row['id']}.mp4" and (out / row["video"]).is_file()
    sft = json.loads((out / "sft.json").read_text())
    assert len(sft) == SIZES["sft"]
    for row in sft:
        human, gpt = row["conversations"]
        assert human["value"].startswith("<image>\n") and "\nOptions:\nA. " in human["value"]
        assert human["value"].endswith("\nAnswer with the option's letter from the given choices directly.")
        assert gpt["value"] == row["answer"] and row["family"] in FAMILIES


def test_coldstart_has_16_reasoning_items(dataset):
    out, _ = dataset
    rows = json.loads((out / "coldstart-16.json").read_text())
    assert len(rows) == 16
    assert len({r["family"] for r in rows}) >= 6
    for row in rows:
        human, gpt = row["conversations"]
        assert human["value"].startswith("<image>\n")
        assert human["value"].endswith(
            " Output the thinking process in <think> </think> and final answer (option) in <answer> </answer> tags."
        )
        m = THINK.match(gpt["value"])
        assert m, gpt["value"]
        assert m.group(2) == row["answer"]
        assert len(m.group(1).split()) >= 12
        assert row["video"].startswith("videos/coldstart/")


def test_answer_letters_balanced(dataset):
    _, manifest = dataset
    for split in ("sft", "rl", "test", "test_heldout", "coldstart"):
        counts = manifest["answer_letters"][split]
        full = [counts.get(letter, 0) for letter in "ABCDE"]
        assert max(full) - min(full) <= 1, (split, counts)
    # and over a bigger in-memory split (letters only depend on seed, split and index)
    from tinyvr.data.synthetic.writer import letter_for

    letters = [letter_for(7, "rl", i) for i in range(103)]
    assert max(np.bincount(letters, minlength=5)) - min(np.bincount(letters, minlength=5)) <= 1


# ---------------------------------------------------------------------------------------------
# content


def test_heldout_combos_absent_from_training_splits(dataset):
    out, _ = dataset
    combo_re = re.compile("|".join(rf"\b{c} {s}" for c, s in HELDOUT_COMBOS))
    for name in ("pretrain.json", "sft.json", "coldstart-16.json", "rl.jsonl", "test.jsonl"):
        assert not combo_re.search((out / name).read_text()), name
    # ground truth: no object ever shows a held-out combo in a training split, every held-out
    # item's subject starts with one
    for split in TRAIN_SPLITS:
        for i in range(24):
            _, cand = generate_item(3, split, i)
            for o in cand.scene.objects:
                assert not any((c, o.shape) in HELDOUT_COMBOS for c in o.colours), (split, i, o)
    for i in range(16):
        _, cand = generate_item(3, "test_heldout", i)
        o = cand.scene.objects[0]
        assert (o.colours[0], o.shape) in HELDOUT_COMBOS


def test_families_cover_and_answers_are_options():
    seen = set()
    for i in range(16):
        rec, _ = generate_item(5, "sft", i)
        seen.add(rec["family"])
        assert rec["options"]["ABCDE".index(rec["answer"])] == rec["answer_text"]
        k = "ABCDE".index(rec["answer"])
        head, *check = rec["reasoning"].split("\n")
        assert rec["caption"] and head.endswith(f" The answer is {rec['answer_text']}.")
        # one line per option up to the answer's: a copy of the option line, then no / yes
        assert check == [f"{c}. {rec['options'][i]}: {'yes' if i == k else 'no'}" for i, c in enumerate("ABCDE"[:k + 1])]
    assert seen == set(FAMILIES)


def test_reasoning_traces_state_the_answer():
    """Traces are built from the same ground truth as the answer: the key fact appears in them."""
    checks = 0
    for i in range(48):
        rec, _ = generate_item(13, "rl", i)
        fam, text, trace = rec["family"], rec["answer_text"], rec["reasoning"]
        if fam == "direction":
            assert ("same spot" if text == "it stays in place" else text) in trace, trace
        elif fam in ("color", "change", "compare") or (fam == "order" and rec["subtype"] != "after"):
            assert text.replace(" the whole time", "") in trace, (rec["question"], text, trace)
        elif fam == "position":
            assert text.split()[-1] in trace and (text == "in the centre" or text.split()[-2] in trace), trace
        elif fam == "count":
            assert re.search(rf"\b{text}\b", trace), trace
        elif fam == "cause":
            assert text.replace("because ", "").split(" the ")[-1] in trace, trace
        checks += 1
    assert checks == 48
    traces = [generate_item(13, "rl", i)[0]["reasoning"] for i in range(48)]
    assert any(("double-check" in t or "Wait" in t or "count again" in t) for t in traces)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, tinyvr.data.synthetic; "
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("family_index", [0, 2])  # color, position
def test_answers_agree_with_pixels(family_index):
    """Re-derive colour / position answers from rendered and from H.264-decoded pixels."""
    n_items, decoded = 0, 0
    for split in ("sft", "test_heldout"):
        for block in range(14):
            i = block * len(FAMILIES) + family_index
            rec, cand = generate_item(11, split, i)
            assert rec["family"] == FAMILIES[family_index]
            frames = cand.view.frames()
            assert answer_from_frames(frames, rec) == rec["answer"], rec
            if block % 3 == 0:  # through the codec, on the 8 frames a model would sample
                dec, _ = decode_mp4(encode_mp4(frames, rec["fps"]))
                assert answer_from_frames(dec[sample_indices(len(dec), 8)], rec) == rec["answer"], rec
                decoded += 1
            n_items += 1
    assert n_items == 28 and decoded >= 8


def test_generate_item_other_frame_size():
    rec, cand = generate_item(0, "rl", 0, frame_size=96)
    frames = cand.view.frames()
    assert frames.shape == (rec["num_frames"], 96, 96, 3)
    assert answer_from_frames(frames, rec) == rec["answer"]


def test_answer_from_frames_rejects_other_families():
    rec, cand = generate_item(0, "sft", 3)
    with pytest.raises(ValueError, match="supports"):
        answer_from_frames(cand.view.frames(), rec)


# ---------------------------------------------------------------------------------------------
# options


def test_parse_sizes():
    assert parse_sizes("pretrain=800, sft=2000,test_heldout=0") == {"pretrain": 800, "sft": 2000, "test_heldout": 0}
    assert parse_sizes("coldstart=8") == {"coldstart": 8}
    with pytest.raises(ConfigError, match="sizes: unknown split 'train'"):
        parse_sizes("train=10")
    with pytest.raises(ConfigError, match="sizes"):
        parse_sizes("sft=-1")
    with pytest.raises(ConfigError, match="sizes"):
        parse_sizes("sft=many")
    with pytest.raises(ConfigError, match="sizes"):
        parse_sizes("sft")
    assert set(DEFAULT_SIZES) == set(SPLITS) and DEFAULT_SIZES["coldstart"] == 16


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"sizes": {"valid": 3}}, "sizes"),
        ({"sizes": {"sft": -2}}, "sizes"),
        ({"sizes": {"sft": 1.5}}, "sizes"),
        ({"frame_size": 63}, "frame_size"),
        ({"frame_size": 16}, "frame_size"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
        ({"coldstart_size": -1}, "coldstart_size"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, kwargs, option):
    with pytest.raises(ConfigError, match=option) as err:
        generate_dataset(tmp_path / "bad", progress=False, **kwargs)
    if option == "sizes" and "valid" in str(kwargs):
        assert "pretrain" in str(err.value)  # the allowed values are listed
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_encoding_is_bit_exact_when_repeated_in_one_process():
    # x264 rate-control state once leaked between encodes in one process (CRF + mb-tree); the
    # pool's workers encode many clips one after another, so repeated encodes must agree.
    from tinyvr.data.synthetic.render import encode_mp4
    from tinyvr.data.synthetic.writer import generate_item

    for split, index in (("sft", 7), ("rl", 0), ("test", 2), ("rl", 1)):
        _, cand = generate_item(0, split, index, 64)
        frames = cand.view.frames()
        digests = {hashlib.sha256(encode_mp4(frames, cand.scene.fps)).hexdigest() for _ in range(4)}
        assert len(digests) == 1, (split, index)


def test_count_window_contains_the_answer_at_a_random_rank():
    rng = np.random.default_rng(0)
    for ans in range(0, 6):
        ranks = set()
        for _ in range(200):
            w = count_window(rng, ans)
            assert len(w) == 5 and w == list(range(w[0], w[0] + 5)) and ans in w and w[0] >= 0
            ranks.add(w.index(ans))
        assert ranks == set(range(min(ans, 4) + 1)), (ans, ranks)


def test_count_options_do_not_give_the_answer_away():
    """The answer's rank among the option numbers must not be a shortcut (it was the median 65% of
    the time when distractors were the nearest numbers)."""
    ranks = []
    for i in range(400):
        rec, _ = generate_item(21, "rl", i)
        if rec["family"] == "count":
            values = sorted(int(o) for o in rec["options"])
            ranks.append(values.index(int(rec["answer_text"])))
    assert len(ranks) >= 30
    share = np.bincount(ranks, minlength=5) / len(ranks)
    assert share.max() < 0.45, share
