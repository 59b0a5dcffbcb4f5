"""tinyvr.data.video: sampling rules, every container, odd rates, bounds, broken files."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from tinyvr.data import video
from tinyvr.data.video import (frame_indices, read_frame_folder, read_frames, read_video,
                               segment_middle_indices, video_info, write_video)
from tinyvr.errors import VideoDecodeError

EXTS = ("mp4", "mkv", "avi", "webm", "mov")


# -- index rules ------------------------------------------------------------------------------


def test_frame_indices_reference_rule():
    assert frame_indices(10, 4) == [0, 3, 6, 9]
    assert frame_indices(900, 16) == np.linspace(0, 899, 16).astype(int).tolist()
    idx = frame_indices(900, 16)
    assert idx[0] == 0 and idx[-1] == 899 and idx[1] == 59  # 59.93 truncates, not rounds


def test_frame_indices_short_clip_repeats_frames():
    assert frame_indices(5, 8) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert frame_indices(1, 3) == [0, 0, 0]


@pytest.mark.parametrize("total,k", [(0, 4), (4, 0)])
def test_frame_indices_rejects_empty(total, k):
    with pytest.raises(ValueError):
        frame_indices(total, k)


def test_segment_middle_indices_hand_computed():
    # seg = 99/4 = 24.75: int(12.375 + round(24.75 k)), Python's half-to-even round(49.5) = 50
    assert segment_middle_indices(99, 4, 30) == [12, 37, 62, 86]
    # bound 1..2 s at 30 fps: s=30, e=60, seg=7.5, round(22.5) = 22
    assert segment_middle_indices(99, 4, 30, 0, 1.0, 2.0) == [33, 41, 48, 55]
    # frame folder: first index 1, max_frame = number of files
    assert segment_middle_indices(20, 4, 3, first_idx=1) == [3, 8, 13, 17]


def test_segment_middle_indices_clamps_bounds_past_the_end():
    idx = segment_middle_indices(99, 4, 30, 0, 10.0, 12.0)
    assert all(0 <= i <= 99 for i in idx)


# -- every container decodes to the right frames ------------------------------------------------


@pytest.mark.parametrize("ext", EXTS)
def test_read_video_returns_the_sampled_frames(coded_videos, coded, ext):
    frames = read_video(coded_videos[ext], 16)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    assert coded.numbers(frames) == frame_indices(100, 16)


@pytest.mark.parametrize("ext", EXTS)
def test_video_info_counts_frames(coded_videos, ext):
    info = video_info(coded_videos[ext])
    assert info["frames"] == 100
    assert info["fps"] == pytest.approx(30, rel=1e-3)
    assert info["duration"] == pytest.approx(100 / 30, abs=0.01)
    assert (info["width"], info["height"]) == (64, 64)


def test_mkv_header_has_no_frame_count_yet_count_is_right(coded_videos, coded):
    with av.open(str(coded_videos["mkv"])) as c:
        assert c.streams.video[0].frames == 0  # the premise: mkv does not say
    assert coded.numbers(read_video(coded_videos["mkv"], 100)) == list(range(100))


@pytest.mark.parametrize("ext", EXTS)
def test_read_frames_any_order_with_repeats(coded_videos, coded, ext):
    assert coded.numbers(read_frames(coded_videos[ext], [5, 99, 0, 5, 42])) == [5, 99, 0, 5, 42]


def test_read_frames_out_of_range_raises(coded_videos):
    with pytest.raises(VideoDecodeError, match="outside"):
        read_frames(coded_videos["mp4"], [100])


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_segment_middle_sampling(coded_videos, coded, ext):
    frames = read_video(coded_videos[ext], 4, sampling="segment_middle")
    assert coded.numbers(frames) == [12, 37, 62, 86]
    frames = read_video(coded_videos[ext], 4, start=1.0, end=2.0, sampling="segment_middle")
    assert coded.numbers(frames) == [33, 41, 48, 55]


# -- seeking ----------------------------------------------------------------------------------


class _CountingContainer:
    """Wraps a PyAV container to count seeks."""

    seeks = 0

    def __init__(self, container):
        self._c = container

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def seek(self, *args, **kwargs):
        _CountingContainer.seeks += 1
        return self._c.seek(*args, **kwargs)


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm", "mov"])
def test_seeking_is_used_and_gives_the_same_frames(coded_videos, coded, monkeypatch, ext):
    real_open = video._open
    monkeypatch.setattr(video, "_open", lambda p: _CountingContainer(real_open(p)))
    _CountingContainer.seeks = 0
    frames = read_video(coded_videos[ext], 4)  # targets 0, 33, 66, 99 with a keyframe every 10
    assert _CountingContainer.seeks >= 2
    assert coded.numbers(frames) == [0, 33, 66, 99]
    monkeypatch.setattr(video, "SEEK_MIN_SKIP", 10**9)
    _CountingContainer.seeks = 0
    assert coded.numbers(read_video(coded_videos[ext], 4)) == [0, 33, 66, 99]
    assert _CountingContainer.seeks == 0


class _OvershootingContainer(_CountingContainer):
    """A container whose seeks land far past the keyframe asked for (a misbehaving demuxer)."""

    def seek(self, offset, **kwargs):
        return self._c.seek(offset + 50 * 512, **kwargs)  # 50 frames later (mp4 time base 1/15360)


class _WrongPtsContainer(_CountingContainer):
    """A container whose decoded frames carry timestamps the demuxer never announced."""

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            frame.pts += 1
            yield frame


@pytest.mark.parametrize("wrapper", [_OvershootingContainer, _WrongPtsContainer])
def test_seek_or_timestamp_trouble_falls_back_to_a_plain_pass(coded_videos, coded, monkeypatch, wrapper):
    real_open = video._open
    monkeypatch.setattr(video, "_open", lambda p: wrapper(real_open(p)))
    assert coded.numbers(read_video(coded_videos["mp4"], 4)) == [0, 33, 66, 99]


def test_count_mode_recounts_when_packets_overcount(coded_videos, coded, monkeypatch):
    """avi is read by counting decoded frames; a packet count that is off costs a second pass."""
    import dataclasses

    real_scan = video._scan
    monkeypatch.setattr(video, "_scan", lambda p, c: dataclasses.replace(real_scan(p, c), count=103))
    assert coded.numbers(read_video(coded_videos["avi"], 4)) == [0, 33, 66, 99]


# -- frame rates and time bounds ----------------------------------------------------------------


def test_fractional_frame_rate_7_5(odd_rate_videos, coded):
    path, _ = odd_rate_videos["7.5"]
    info = video_info(path)
    assert (info["frames"], info["fps"]) == (30, 7.5) and info["duration"] == pytest.approx(4.0)
    # frames with t = i / 7.5 in [1, 2] s are 8..15; four of them by the reference rule
    assert coded.numbers(read_video(path, 4, start=1.0, end=2.0)) == [8, 10, 12, 15]


def test_ntsc_frame_rate(odd_rate_videos, coded):
    path, fps = odd_rate_videos["ntsc"]
    info = video_info(path)
    assert info["frames"] == 60 and info["fps"] == pytest.approx(fps)
    assert coded.numbers(read_video(path, 16)) == frame_indices(60, 16)
    # t_i = i * 1001/30000 s: frames 30 (1.001 s) .. 44 (1.468 s) lie in [1.0, 1.5]
    assert coded.numbers(read_video(path, 3, start=1.0, end=1.5)) == [30, 37, 44]


def test_short_clip_repeats_frames(odd_rate_videos, coded):
    path, _ = odd_rate_videos["short"]
    frames = read_video(path, 8)
    assert len(frames) == 8
    assert coded.numbers(frames) == [0, 0, 1, 1, 2, 2, 3, 4]


def test_open_ended_bounds(coded_videos, coded):
    path = coded_videos["mkv"]
    assert coded.numbers(read_video(path, 2, start=3.0)) == [90, 99]
    assert coded.numbers(read_video(path, 2, end=0.1)) == [0, 3]


def test_window_between_frames_takes_nearest(coded_videos, coded):
    # frames at 1.0 s and 1.0333 s; the window [1.01, 1.02] holds none, frame 30 is nearest
    assert coded.numbers(read_video(coded_videos["mp4"], 2, start=1.01, end=1.02)) == [30, 30]


def test_window_outside_video_raises(coded_videos):
    with pytest.raises(VideoDecodeError, match="no frames between"):
        read_video(coded_videos["mp4"], 4, start=10.0, end=12.0)


def test_start_after_end_is_a_usage_error(coded_videos):
    with pytest.raises(ValueError):
        read_video(coded_videos["mp4"], 4, start=2.0, end=1.0)


@pytest.fixture(scope="module")
def vfr_video(video_dir, coded):
    """12 frames at irregular times (ms) in an mp4."""
    times = [0, 40, 80, 120, 700, 740, 780, 1500, 1510, 1520, 1530, 3000]
    path = video_dir / "vfr.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t, a in zip(times, coded.frames(len(times))):
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def test_variable_frame_rate(vfr_video, coded):
    assert video_info(vfr_video)["frames"] == 12
    assert coded.numbers(read_video(vfr_video, 4)) == [0, 3, 7, 11]  # by index, not by time
    # bounds use real timestamps: frames 4..10 (0.70 .. 1.53 s) lie in [0.5, 1.6]
    assert coded.numbers(read_video(vfr_video, 4, start=0.5, end=1.6)) == [4, 6, 8, 10]


# -- broken files -----------------------------------------------------------------------------


def _write_audio(path, seconds: float, fmt=None):
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        n = int(seconds * 16000 / 1024)
        for i in range(n):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pk in s.encode(fr):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


@pytest.fixture(scope="module")
def broken_files(video_dir, coded_videos, coded):
    d = video_dir / "broken"
    d.mkdir()
    out = {}
    (d / "empty.mp4").write_bytes(b"")
    out["zero-byte"] = d / "empty.mp4"
    for ext in ("mp4", "mkv", "webm"):
        data = coded_videos[ext].read_bytes()
        (d / f"half.{ext}").write_bytes(data[: len(data) // 2])
        out[f"truncated {ext}"] = d / f"half.{ext}"
    fast = write_video(d / "faststart.mp4", coded.frames(60), 30, options={"movflags": "faststart"})
    data = fast.read_bytes()
    (d / "faststart_half.mp4").write_bytes(data[: len(data) // 2])
    out["truncated faststart mp4"] = d / "faststart_half.mp4"
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    out["random bytes"] = d / "random.mp4"
    (d / "notes.mkv").write_text("this is not a video\n" * 50)
    out["text file"] = d / "notes.mkv"
    out["audio only"] = _write_audio(d / "audio.m4a", 1.0, fmt="mp4")
    out["missing"] = d / "does_not_exist.mp4"
    (d / "folder.mp4").mkdir()
    out["directory"] = d / "folder.mp4"
    return out


BROKEN = ["zero-byte", "truncated mp4", "truncated mkv", "truncated webm", "truncated faststart mp4",
          "random bytes", "text file", "audio only", "missing", "directory"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_file_raises_video_decode_error_naming_the_path(broken_files, kind):
    path = broken_files[kind]
    with pytest.raises(VideoDecodeError) as e:
        read_video(path, 8)
    assert str(path) in str(e.value) and e.value.path == str(path)
    with pytest.raises(VideoDecodeError):
        video_info(path)


def test_cut_mkv_is_detected_not_silently_short(broken_files):
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_video(broken_files["truncated mkv"], 8)


def test_audio_outlasting_video_is_not_truncation(video_dir, coded):
    """The duration check compares against every stream, so a longer soundtrack is fine."""
    path = video_dir / "with_audio.mkv"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for a in coded.frames(30):  # 1 s of video
            for pk in vs.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pk)
        for pk in vs.encode():
            c.mux(pk)
        for i in range(int(3 * 16000 / 1024)):  # 3 s of audio
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pk in aus.encode(fr):
                c.mux(pk)
        for pk in aus.encode():
            c.mux(pk)
    assert coded.numbers(read_video(path, 4)) == [0, 9, 19, 29]


# -- frame folders ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_folder(video_dir, coded):
    from PIL import Image

    d = video_dir / "frames"
    d.mkdir()
    for i, a in enumerate(coded.frames(20, first=1), start=1):  # file k shows the number k
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return d


def test_read_frame_folder_segment_middle(frame_folder, coded):
    frames = read_frame_folder(frame_folder, 4, fps=3)
    assert frames.shape == (4, 64, 64, 3)
    assert coded.numbers(frames) == segment_middle_indices(20, 4, 3, first_idx=1) == [3, 8, 13, 17]
    # bound 1..4 s at 3 fps: s=3, e=12, seg=2.25 -> int(4.125 + round(2.25 k)), round(4.5) = 4
    assert coded.numbers(read_frame_folder(frame_folder, 4, start=1, end=4, fps=3)) == [4, 6, 8, 11]


def test_frame_folder_errors(video_dir, frame_folder):
    with pytest.raises(VideoDecodeError, match="not found"):
        read_frame_folder(video_dir / "nope", 4)
    empty = video_dir / "empty_frames"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="no frame images"):
        read_frame_folder(empty, 4)
    bad = video_dir / "bad_frames"
    bad.mkdir()
    for i in range(1, 4):
        (bad / f"{i:05d}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError) as e:
        read_frame_folder(bad, 2)
    assert str(bad) in str(e.value)


# -- writing ----------------------------------------------------------------------------------


def test_write_video_odd_size_uses_444(video_dir):
    frames = np.random.default_rng(0).integers(0, 256, (10, 33, 65, 3), dtype=np.uint8)
    out = read_video(write_video(video_dir / "odd.mp4", frames, 10), 10)
    assert out.shape == (10, 33, 65, 3)
    with pytest.raises(ValueError, match="even"):
        write_video(video_dir / "odd.avi", frames, 10)


def test_write_video_rejects_bad_frames(video_dir):
    with pytest.raises(ValueError):
        write_video(video_dir / "bad.mp4", np.zeros((2, 8, 8, 3), np.float32), 10)
    with pytest.raises(ValueError):
        write_video(video_dir / "bad.xyz", np.zeros((2, 8, 8, 3), np.uint8), 10)


def test_video_module_imports_no_torch_or_transformers():
    code = ("import sys, tinyvr.data.video; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
