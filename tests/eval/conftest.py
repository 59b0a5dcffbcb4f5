"""Benchmark folders in the real released layouts, with tiny real videos, built per test.

Videos are encoded once per session (PyAV directly, not tinyvr.data.video) and copied where a
layout needs them, so building a benchmark folder costs file copies only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

_CODECS = {".mp4": "mpeg4", ".avi": "mpeg4", ".webm": "libvpx"}


def encode_video(path: Path, num_frames: int = 8, size: int = 32, fps: int = 8) -> Path:
    """A short clip whose frames differ (a moving bright square), in the container of the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_CODECS[path.suffix], rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            img = np.zeros((size, size, 3), np.uint8)
            x = (i * 3) % (size - 8)
            img[8:16, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, num_frames: int = 12, size: int = 32) -> Path:
    """A TVQA-style JPEG folder: 00001.jpg, 00002.jpg, ... (first index 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, num_frames + 1):
        Image.new("RGB", (size, size), (10 * i % 256, 0, 0)).save(folder / f"{i:05d}.jpg")
    return folder


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """One encoded clip per container, copied by `place`."""
    d = tmp_path_factory.mktemp("clips")
    return {s: encode_video(d / f"clip{s}") for s in _CODECS}


@pytest.fixture
def place(clips):
    def _place(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[path.suffix], path)
        return path
    return _place


# ---- MVBench -------------------------------------------------------------------------------------
MVBENCH_ROWS = {
    # Action Sequence: "video" reader, bound task (STAR clips)
    "action_sequence.json": [
        {"video": "AB12C.mp4", "question": "What did the person do first?",
         "candidates": ["Opened the door.", "Sat on the bed.", "Took the cup.", "Threw the towel."],
         "answer": "Sat on the bed.", "start": 2.5, "end": 9.0},
        {"video": "XY34Z.mp4", "question": "What did the person do after holding the box?",
         "candidates": ["Put down the box.", "Closed the laptop.", "Ate the sandwich.", "Opened the bag."],
         "answer": "Put down the box.", "start": 0, "end": 4},
    ],
    # Action Antonym: webm via decord, no bound
    "action_antonym.json": [
        {"video": "1234.webm", "question": "What is the action performed by the person in the video?",
         "candidates": ["Pushing something from left to right", "Pulling something from left to right",
                        "Not sure"],
         "answer": "Not sure"},
    ],
    # Fine-grained Pose: avi via decord
    "fine_grained_pose.json": [
        {"video": "S001C001P001R001A001_rgb.avi", "question": "What is the pose performed by the person?",
         "candidates": ["drink water", "eat meal", "brush teeth", "pick up"], "answer": "pick up"},
    ],
    # Episodic Reasoning: TVQA frame folder, fps 3, bound
    "episodic_reasoning.json": [
        {"video": "castle_s01e01_seg02_clip_00", "question": "What is Castle holding when he talks?",
         "candidates": ["A book", "A phone", "A gun", "A cup", "A pen"], "answer": "A phone",
         "start": 1.0, "end": 3.5},
    ],
}
MVBENCH_FOLDERS = {
    "action_sequence.json": "star/Charades_v1_480",
    "action_antonym.json": "ssv2_video",
    "fine_grained_pose.json": "nturgbd",
    "episodic_reasoning.json": "tvqa/frames_fps3_hq",
}


@pytest.fixture
def mvbench_root(tmp_path, place):
    root = tmp_path / "MVBench"
    for fname, items in MVBENCH_ROWS.items():
        write_json(root / "json" / fname, items)
        for it in items:
            target = root / "video" / MVBENCH_FOLDERS[fname] / it["video"]
            if fname == "episodic_reasoning.json":
                write_frames(target)
            else:
                place(target)
    return root


# ---- Video-MME -----------------------------------------------------------------------------------
def videomme_rows():
    rows = []
    for d, vid in (("short", "fFjv93ACGo8"), ("medium", "Mj1bbYm4CJA"), ("long", "zX6yL3Uh7sM")):
        for q in range(2):
            rows.append({
                "video_id": f"{len(rows) // 2 + 1:03d}", "duration": d, "domain": "Knowledge",
                "sub_category": "Humanity & History", "url": f"https://www.youtube.com/watch?v={vid}",
                "videoID": vid, "question_id": f"{len(rows) // 2 + 1:03d}-{q + 1}",
                "task_type": "Counting Problem" if q == 0 else "Action Reasoning",
                "question": f"How many people appear in the {d} video?" if q == 0 else "Why does he run?",
                "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
                "answer": "BC"[q],
            })
    return rows


@pytest.fixture
def videomme_root(tmp_path, place):
    """The table as jsonl beside the (absent) parquet: pyarrow is not a tinyvr dependency."""
    root = tmp_path / "Video-MME"
    rows = videomme_rows()
    write_jsonl(root / "videomme" / "test-00000-of-00001.jsonl", rows)
    for r in rows:
        place(root / "data" / f"{r['videoID']}.mp4")
    return root


# ---- MLVU ----------------------------------------------------------------------------------------
MLVU_ROWS = {
    "1_plotQA": [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What color is the main male character in the video?",
         "candidates": ["Yellow", "Red", "Green", "Blue"], "answer": "Yellow", "question_type": "plotQA"},
        {"video": "movie101_67.mp4", "duration": 300, "question": "Where does the woman go?",
         "candidates": ["Home", "School", "Office", "Park"], "answer": "Park", "question_type": "plotQA"},
    ],
    "4_count": [
        {"video": "count_1.mp4", "duration": 120, "question": "How many times does the dog jump?",
         "candidates": ["1", "2", "3", "4"], "answer": "3", "question_type": "count"},
    ],
}


@pytest.fixture
def mlvu_root(tmp_path, place):
    root = tmp_path / "MLVU"
    for stem, items in MLVU_ROWS.items():
        write_json(root / "json" / f"{stem}.json", items)
        for it in items:
            place(root / "video" / stem / it["video"])
    return root


# ---- MMVU ----------------------------------------------------------------------------------------
MMVU_PREFIX = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main"
MMVU_ROWS = [
    {"id": "b2a3c1", "question": "Which law explains the motion of the cart?",
     "choices": {"A": "Newton's first law", "B": "Hooke's law", "C": "Ohm's law", "D": "Snell's law",
                 "E": "Boyle's law"},
     "answer": "A", "question_type": "multiple-choice",
     "metadata": {"subject": "Physics", "discipline": "Science"},
     "video": f"{MMVU_PREFIX}/videos/Physics/12.mp4"},
    {"id": "oe0001", "question": "What is the name of the reaction shown?", "choices": {},
     "answer": "combustion", "question_type": "open-ended",
     "metadata": {"subject": "Chemistry", "discipline": "Science"},
     "video": f"{MMVU_PREFIX}/videos/Chemistry/3.mp4"},
    {"id": "c9d8e7", "question": "What does the surgeon cut first?",
     "choices": {"A": "Skin", "B": "Muscle", "C": "Bone", "D": "Tendon"},
     "answer": "A", "question_type": "multiple-choice",
     "metadata": {"subject": "Clinical_Medicine", "discipline": "Healthcare"},
     "video": f"{MMVU_PREFIX}/videos/Clinical_Medicine/5.mp4"},
]


@pytest.fixture
def mmvu_root(tmp_path, place):
    root = tmp_path / "MMVU"
    write_json(root / "validation.json", MMVU_ROWS)
    for r in MMVU_ROWS:
        if r["question_type"] == "multiple-choice":
            place(root / r["video"][len(MMVU_PREFIX) + 1:])
    return root


# ---- synthetic -----------------------------------------------------------------------------------
def synthetic_row(i, family, options, answer):
    letters = "ABCDEFGH"
    question = {"counting": "How many red balls cross the line?",
                "order": "Which shape appears first?"}[family]
    problem = question + "\nOptions:\n" + "\n".join(f"{letters[k]}. {o}" for k, o in enumerate(options))
    return {"problem": problem, "solution": f"<answer>{answer}</answer>",
            "video_filename": f"./videos/test/{i:05d}.mp4", "id": f"syn-{i:05d}", "family": family,
            "question": question, "options": options, "answer": answer, "seed": 1000 + i}


@pytest.fixture
def synthetic_root(tmp_path, place):
    root = tmp_path / "synthetic"
    rows = [synthetic_row(0, "counting", ["1", "2", "3", "4"], "C"),
            synthetic_row(1, "order", ["circle", "square", "triangle"], "A"),
            synthetic_row(2, "counting", ["0", "1", "2", "5"], "B")]
    write_jsonl(root / "test.jsonl", rows)
    held = [dict(synthetic_row(3, "order", ["star", "circle"], "B"),
                 video_filename="./videos/test_heldout/00003.mp4")]
    write_jsonl(root / "test_heldout.jsonl", held)
    for r in rows + held:
        place(root / r["video_filename"][2:])
    return root


# ---- a model to evaluate -------------------------------------------------------------------------
SMALL_MODEL = {  # the tiny preset shrunk further: evaluation logic does not depend on model size
    "text_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128},
    "vision_config": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "image_size": 32},
    "num_queries": 16, "group": 4, "num_frames": 4, "resampler_head_dim": 16,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tinyvr model folder (safetensors + tokenizer), built once."""
    from tinyvr.recipes.common import init_model_folder

    return init_model_folder("tiny", tmp_path_factory.mktemp("eval-model") / "tiny", seed=0,
                             overrides=SMALL_MODEL)


# ---- spying on generation ------------------------------------------------------------------------
class Interrupted(Exception):
    """Stands in for a kill (not KeyboardInterrupt: pytest would stop the session)."""


@pytest.fixture
def generate_calls(monkeypatch):
    """Spy on `RolloutEngine.generate`: one (prompts, max_new_tokens) per call. `reset(kill_at=n)`
    makes the n-th call from then on (1-based) raise `generate_calls.Interrupted` instead."""
    from tinyvr.rl.rollout import RolloutEngine

    real = RolloutEngine.generate

    class Calls(list):
        kill_at = 0

        def reset(self, kill_at=0):
            self.clear()
            self.kill_at = kill_at

    calls = Calls()
    calls.Interrupted = Interrupted

    def spy(self, prompt_ids, video_embeds, params, *args, **kwargs):
        if calls.kill_at and len(calls) + 1 == calls.kill_at:
            raise Interrupted
        calls.append((len(prompt_ids), params.max_new_tokens))
        return real(self, prompt_ids, video_embeds, params, *args, **kwargs)

    monkeypatch.setattr(RolloutEngine, "generate", spy)
    return calls
