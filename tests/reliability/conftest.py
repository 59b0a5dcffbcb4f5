"""Session fixtures for the fault-injection suite: one tiny real dataset, one small model folder,
and a set of broken / extreme video files, each built once.

The model is the `tiny` preset shrunk further (1 LLM layer, 2 tower layers, 32-px frames): the
faults under test do not depend on model size, and a 3-step SFT run then takes well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SIZES = {"pretrain": 4, "sft": 4, "rl": 4, "test": 4, "test_heldout": 4, "coldstart": 16}
SMALL = {
    "text_config": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128},
    "vision_config": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "image_size": 32},
    "num_queries": 16, "group": 4, "num_frames": 4, "resampler_head_dim": 16,
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A real synthetic dataset (H.264 .mp4 files, reference-format json/jsonl)."""
    from tinyvr.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=0, sizes=SIZES, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tinyvr.recipes.common import init_model_folder

    return init_model_folder("tiny", tmp_path_factory.mktemp("init") / "model", seed=0, overrides=SMALL)


def _gradient(h: int, w: int, n: int) -> np.ndarray:
    """uint8 [n, h, w, 3] smooth moving gradient: cheap to encode even at 2000x2000."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx + yy) % 256).astype(np.uint8)
    return np.stack([np.repeat(np.roll(base, 16 * i, 1)[..., None], 3, 2) for i in range(n)])


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for pk in s.encode(frame):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


@pytest.fixture(scope="session")
def fault_videos(tmp_path_factory) -> dict[str, Path]:
    """{name: path} of broken and extreme video files (see test_video_faults.py for each)."""
    from tinyvr.data.video import write_video

    d = tmp_path_factory.mktemp("fault_videos")
    frames = _gradient(64, 64, 40)
    ok_mp4 = write_video(d / "ok.mp4", frames, 10)
    ok_mkv = write_video(d / "ok.mkv", frames, 10)
    v = {"ok_mp4": ok_mp4, "ok_mkv": ok_mkv}
    for name, src in (("truncated_mp4", ok_mp4), ("truncated_mkv", ok_mkv)):
        data = src.read_bytes()
        v[name] = d / f"half{src.suffix}"
        v[name].write_bytes(data[: len(data) // 2])
    v["zero_bytes"] = d / "zero.mp4"
    v["zero_bytes"].write_bytes(b"")
    v["random_bytes"] = d / "random.mp4"
    v["random_bytes"].write_bytes(np.random.default_rng(0).bytes(20_000))
    v["text_as_mp4"] = d / "notes.mp4"
    v["text_as_mp4"].write_text("this is a shopping list, not a video\n" * 50)
    v["audio_only"] = _audio_only(d / "audio_only.mp4")
    v["missing"] = d / "never_written.mp4"
    v["directory"] = d / "a_folder.mp4"
    v["directory"].mkdir()
    v["one_frame"] = write_video(d / "one_frame.mp4", frames[:1], 10)
    v["huge"] = write_video(d / "huge.mp4", _gradient(2000, 2000, 6), 10, options={"preset": "ultrafast"})
    return v


@pytest.fixture
def data_root(tmp_path, tiny_data) -> Path:
    """A per-test video root that sees the synthetic videos (symlink) and can hold broken ones."""
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tiny_data / "videos", root / "videos")
    return root


@pytest.fixture(scope="session")
def sft_config(tiny_data, tiny_model):
    """cfg(out_dir, *overrides, train_file=..., video_root=...) -> TrainConfig for a 3-step SFT run."""
    from tinyvr.config import load_config

    def make(out, *overrides, train_file=None, video_root=None):
        return load_config("configs/tiny/sft.yaml", [
            f"run.output_dir={out}", f"model.init_from={tiny_model}",
            f"data.train_file={train_file or tiny_data / 'sft.json'}", f"data.video_root={video_root or tiny_data}",
            "data.eval_file=", "optim.max_steps=3", "optim.batch_size=2", "run.progress=false",
            "run.tensorboard=false", "run.threads=1", *overrides])

    return make
