"""Broken and extreme video files: every failure is a VideoDecodeError naming the file; short and
huge clips decode to exactly what the model needs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tinyvr.data.video import read_video, video_info
from tinyvr.errors import TinyVRError, VideoDecodeError

BROKEN = {
    "zero_bytes": "empty file",
    "truncated_mp4": "corrupt or not a video",  # moov atom at the end: cut off
    "truncated_mkv": "truncated",  # demuxes without error; caught by duration vs packets
    "random_bytes": "corrupt or not a video",
    "text_as_mp4": "corrupt or not a video",
    "audio_only": "no video stream",
    "missing": "file not found",
    "directory": "not a file",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_video_raises_decode_error_naming_the_file(fault_videos, name):
    path = fault_videos[name]
    with pytest.raises(VideoDecodeError) as e:
        read_video(path, 8)
    err = e.value
    assert isinstance(err, TinyVRError)  # the CLI prints it as one `error:` line
    assert err.path == str(path) and str(path) in str(err)
    assert BROKEN[name] in err.reason, err.reason


@pytest.mark.parametrize("name", ["zero_bytes", "truncated_mkv", "audio_only"])
def test_video_info_fails_the_same_way(fault_videos, name):
    with pytest.raises(VideoDecodeError, match=BROKEN[name]):
        video_info(fault_videos[name])


def test_truncated_faststart_mp4_is_refused(tmp_path, fault_videos):
    """moov first (faststart): the cut file opens, and its header promises frames it lacks."""
    import av

    path = tmp_path / "fast.mp4"
    frames = read_video(fault_videos["ok_mp4"], 40)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated") as e:
        read_video(cut, 8)
    assert str(cut) in str(e.value)


def test_one_frame_video_repeats_the_frame(fault_videos):
    """Short-clip rule: fewer frames than asked -> frames repeat, always num_frames returned."""
    out = read_video(fault_videos["one_frame"], 8)
    assert out.shape == (8, 64, 64, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[0], f) for f in out)


def test_zero_or_negative_frame_count_is_refused(fault_videos):
    for n in (0, -3):
        with pytest.raises(ValueError, match="num_frames"):
            read_video(fault_videos["ok_mp4"], n)


def test_huge_resolution_decodes_and_is_resized_to_the_tower(fault_videos, tiny_model):
    """2000x2000 frames: only the sampled frames become arrays; the processor squashes them to
    the tower size, so what reaches the model is [T, 3, S, S] whatever the source resolution."""
    from tinyvr.data.processor import Processor

    proc = Processor.from_pretrained(tiny_model)
    frame_bytes = 2000 * 2000 * 3
    tracemalloc.start()
    try:
        pix = proc.load_video(fault_videos["huge"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pix.shape == (proc.num_frames, 3, proc.image_size, proc.image_size)
    assert pix.dtype.is_floating_point and bool(pix.isfinite().all())
    assert pix.min() >= -1 and pix.max() <= 1
    # the sampled frames (and one stacked copy), not the whole decoded clip many times over
    assert peak < 3 * proc.num_frames * frame_bytes, peak / 2**20
    assert video_info(fault_videos["huge"])["width"] == 2000
