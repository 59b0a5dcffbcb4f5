"""Shared fixtures for tinyvr.data: small videos and the tiny tokenizer, built once per session.

Test videos encode the frame index in their pixels (16 black/white blocks = 16 bits), so a test
can tell from the decoded pixels exactly which frames a reader returned.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tinyvr.data.video import write_video

H = W = 64
NUM_FRAMES = 100  # frames of the standard clips


def coded_frames(n: int, h: int = H, w: int = W, first: int = 0) -> np.ndarray:
    """uint8 [n, h, w, 3]: frame i shows the bits of (first + i) as 2 rows of 8 white blocks."""
    idx = np.arange(first, first + n)
    bits = (idx[:, None] >> np.arange(16)) & 1  # [n, 16]
    blocks = bits.reshape(n, 2, 8).astype(np.uint8) * 255
    frames = np.repeat(np.repeat(blocks, h // 2, axis=1), w // 8, axis=2)  # [n, h, w]
    return np.repeat(frames[..., None], 3, axis=3)


def frame_number(frame: np.ndarray) -> int:
    """Inverse of coded_frames for one decoded frame (reads each block's centre)."""
    h, w = frame.shape[:2]
    value = 0
    for b in range(16):
        r, c = divmod(b, 8)
        if frame[r * h // 2 + h // 4, c * w // 8 + w // 16].mean() > 127:
            value |= 1 << b
    return value


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [frame_number(f) for f in frames]


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def coded_videos(video_dir):
    """{ext: path} of a 100-frame 30 fps coded clip per container (keyframe every 10 frames)."""
    frames = coded_frames(NUM_FRAMES)
    return {ext: write_video(video_dir / f"clip.{ext}", frames, 30, gop=10)
            for ext in ("mp4", "mkv", "avi", "webm", "mov")}


@pytest.fixture(scope="session")
def odd_rate_videos(video_dir):
    """{name: (path, fps)}: 7.5 fps, NTSC 30000/1001 fps, and a 5-frame clip."""
    return {
        "7.5": (write_video(video_dir / "slow.mp4", coded_frames(30), 7.5), 7.5),
        "ntsc": (write_video(video_dir / "ntsc.mkv", coded_frames(60), Fraction(30000, 1001)), 30000 / 1001),
        "short": (write_video(video_dir / "short.mp4", coded_frames(5), 30), 30.0),
    }


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tinyvr.data.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def processor(tiny_tokenizer):
    from tinyvr.data.processor import Processor

    return Processor(tiny_tokenizer, image_size=32, num_frames=8, max_length=3072)


@pytest.fixture(scope="session")
def coded():
    """The frame-index codec for tests: coded.frames(n, h, w, first), coded.numbers(frames)."""

    class Codec:
        frames = staticmethod(coded_frames)
        number = staticmethod(frame_number)
        numbers = staticmethod(frame_numbers)

    return Codec
