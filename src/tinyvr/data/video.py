"""Read frames from video files (PyAV) and frame folders; write small videos.

Sampling rule (reference §3.1): `num_frames` indices `linspace(0, N-1, num_frames)` truncated
toward zero over the N decodable frames, endpoints included. A clip with fewer frames than asked
repeats frames, so the result always has exactly `num_frames` frames.

How a file is read (never trusting `stream.frames`, which is 0 in mkv):
1. Scan: demux every packet without decoding (cheap) to count the frames, learn each frame's
   presentation timestamp and the keyframes, and compare the span the packets cover with the
   duration the container declares (an mkv cut in half demuxes without error but covers half).
2. Decode only what is needed. mp4/mov/mkv/webm: wanted frames are found by timestamp, and the
   reader seeks to the keyframe before a wanted frame when that skips more than `SEEK_MIN_SKIP`
   frames. Other containers (avi: packet timestamps are unreliable there) are decoded in one pass
   that counts frames. Either way only the sampled frames are converted to RGB arrays.
Every failure (missing, empty, truncated, not a video, no video stream, a wanted frame that does
not decode) raises `VideoDecodeError(path, reason)`: a wrong frame count is never returned.

Time bounds `start`/`end` are seconds from the first video frame, inclusive (see `read_video`).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np

from tinyvr.errors import VideoDecodeError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
SAMPLINGS = ("linspace", "segment_middle")

# Containers whose packet timestamps are the frames' presentation times.
_PTS_FORMATS = {"mov", "mp4", "matroska", "webm"}
# Seek only when it skips more than this many frames: a seek flushes the decoder and re-reads.
SEEK_MIN_SKIP = 8
# A file must cover its declared duration (and frame count) up to this fraction, else "truncated".
COMPLETENESS_TOLERANCE = 0.05
# What PyAV/FFmpeg raise on bad input (InvalidDataError, FileNotFoundError, ...).
_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)
_EPS = 1e-6  # seconds: timestamps computed from rationals may miss a bound by rounding
# Codec per container when write_video is not told (libx264 is not allowed in webm).
_DEFAULT_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                   ".avi": "mpeg4"}


# ---------------------------------------------------------------------------------------------
# index rules


def frame_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices into `total` frames: linspace(0, total-1) truncated (reference rule).

    Endpoints included; when total < num_frames frames repeat (always num_frames indices).
    """
    if total < 1:
        raise ValueError(f"cannot sample from {total} frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.linspace(0, total - 1, num_frames).astype(int).tolist()


def segment_middle_indices(max_frame: int, num_frames: int, fps: float, first_idx: int = 0,
                           start: float | None = None, end: float | None = None) -> list[int]:
    """MVBench's rule (§3.1): the middles of `num_frames` equal segments of [start, end] seconds.

    `max_frame` is the last usable index (a video: N-1 with first_idx=0; a frame folder: the
    number of files with first_idx=1). Python's round (half to even) as the reference. Bounds
    outside the clip are clamped into [first_idx, max_frame] rather than indexing past the video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    start = -100000 if start is None else start
    end = 100000 if end is None else end
    s = max(first_idx, round(start * fps))
    e = min(round(end * fps), max_frame)
    seg = (e - s) / num_frames
    idx = [int(s + seg / 2 + round(seg * k)) for k in range(num_frames)]
    return [min(max(i, first_idx), max_frame) for i in idx]


def _check_bounds(start: float | None, end: float | None) -> None:
    if start is not None and end is not None and start > end:
        raise ValueError(f"start ({start}) is after end ({end})")


def _linspace_chooser(path: Path, num_frames: int, start: float | None, end: float | None):
    """positions(times) for the reference rule applied to the frames inside [start, end]."""

    def choose(times: np.ndarray, fps: float) -> list[int]:
        if start is None and end is None:
            return frame_indices(len(times), num_frames)
        lo = -np.inf if start is None else start - _EPS
        hi = np.inf if end is None else end + _EPS
        cand = np.nonzero((times >= lo) & (times <= hi))[0]
        if len(cand) == 0:
            # A window between two frames takes the nearest frame; one outside the video is an error.
            duration = float(times[-1]) + 1.0 / fps
            if lo > duration or hi < 0:
                raise VideoDecodeError(path, f"no frames between {start} s and {end} s: the video "
                                             f"lasts {duration:.3f} s")
            dist = np.maximum(np.maximum(lo - times, times - hi), 0)
            cand = np.array([int(np.argmin(dist))])
        return [int(cand[i]) for i in frame_indices(len(cand), num_frames)]

    return choose


# ---------------------------------------------------------------------------------------------
# scanning


@dataclass
class _Scan:
    """What demuxing (without decoding) tells about the first video stream."""

    format: str
    count: int  # packets carrying a video frame
    pts: list[int] | None  # sorted presentation timestamps; None when unreliable (count mode)
    keyframe_positions: list[int]  # presentation positions of keyframes (pts mode only)
    time_base: Fraction
    fps: float  # average frame rate
    width: int
    height: int

    def times(self, count: int | None = None) -> np.ndarray:
        """Seconds from the first frame, one per frame."""
        if self.pts is not None:
            return (np.asarray(self.pts, dtype=np.float64) - self.pts[0]) * float(self.time_base)
        return np.arange(self.count if count is None else count, dtype=np.float64) / self.fps


def _open(path: Path):
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    container = av.open(str(path), metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream in the file")
    return container


def _scan(path: Path, container) -> _Scan:
    stream = container.streams.video[0]
    fmt = container.format.name
    pts: list[int] = []
    key_pts: list[int] = []
    count, pts_ok = 0, bool(_PTS_FORMATS & set(fmt.split(",")))
    last_end: dict[int, float] = {}  # per stream: end (s) of its last packet
    for packet in container.demux():
        if packet.size == 0:  # flush packets carry no data
            continue
        s = packet.stream
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and s.time_base is not None:
            end = (ts + (packet.duration or 0)) * float(s.time_base)
            last_end[s.index] = max(last_end.get(s.index, end), end)
        if s.index != stream.index or packet.is_discard:  # discard: decoded, never shown (edit lists)
            continue
        count += 1
        if packet.pts is None:
            pts_ok = False
        elif pts_ok:
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
    if count == 0:
        raise VideoDecodeError(path, "no video frames in the file (empty or truncated)")
    pts.sort()
    if len(set(pts)) != len(pts):
        pts_ok = False
    tb = stream.time_base or Fraction(1, 1)
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    measured = 0.0
    if pts_ok and count > 1 and pts[-1] > pts[0]:
        measured = (count - 1) / ((pts[-1] - pts[0]) * float(tb))
    # The declared rate (what decord reports) unless the timestamps disagree (variable rate).
    fps = rate if rate and (not measured or abs(measured - rate) <= 0.01 * rate) else measured
    fps = fps or 25.0  # nothing known (one frame, no rate): only affects time bounds
    index_of = {p: i for i, p in enumerate(pts)} if pts_ok else {}
    keys = sorted(index_of[p] for p in key_pts) if pts_ok else []
    scan = _Scan(fmt, count, pts if pts_ok else None, keys, tb, fps,
                 stream.codec_context.width, stream.codec_context.height)
    _check_complete(path, container, stream, scan, list(last_end.values()))
    return scan


def _check_complete(path: Path, container, stream, scan: _Scan, ends: list[float]) -> None:
    """Raise if the file holds clearly less than its header promises (a cut file)."""
    promised = stream.frames  # exact in mp4/avi headers, 0 in mkv/webm
    if promised and promised - scan.count > max(1, COMPLETENESS_TOLERANCE * promised):
        raise VideoDecodeError(path, f"truncated: the header promises {promised} frames, the "
                                     f"file holds {scan.count}")
    if container.duration and ends:
        # Compare against every stream's packets: audio may legitimately outlast the video.
        declared = container.duration / av.time_base
        covered = max(ends) - (container.start_time or 0) / av.time_base
        if declared - covered > max(COMPLETENESS_TOLERANCE * declared, 2.0 / scan.fps):
            raise VideoDecodeError(path, f"truncated: the file declares {declared:.2f} s but its "
                                         f"packets cover {covered:.2f} s ({scan.count} frames)")


# ---------------------------------------------------------------------------------------------
# decoding


class _PtsMismatch(Exception):
    """Decoded frames do not carry the scanned timestamps: decode by counting instead."""


class _SeekMiss(Exception):
    """A seek landed after the frame it aimed at: decode from the start instead."""


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _decode_by_pts(path: Path, scan: _Scan, targets: list[int], seek: bool) -> dict[int, np.ndarray]:
    """{position: rgb} for the sorted unique presentation `targets`, found by timestamp."""
    pts = scan.pts
    index_of = {p: i for i, p in enumerate(pts)}
    wanted = set(targets)
    out: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        # Frame-threaded decoding: the frames between keyframe and target must be decoded anyway,
        # and threads decode them on every core (output order and pixels are unchanged).
        stream.thread_type = "AUTO"
        frames, last, check_landing = None, -1, False
        for target in targets:
            if target in out:
                continue
            k = bisect.bisect_right(scan.keyframe_positions, target) - 1
            key = scan.keyframe_positions[k] if k >= 0 else 0
            jump = seek and key - max(last, 0) > SEEK_MIN_SKIP
            if frames is None or jump:
                if jump:
                    container.seek(pts[key], stream=stream, backward=True, any_frame=False)
                frames, check_landing = container.decode(stream), jump
            for frame in frames:
                if frame.pts is None or frame.pts not in index_of:
                    raise _PtsMismatch
                pos = index_of[frame.pts]
                if check_landing and pos > key:  # the seek overshot its keyframe
                    raise _SeekMiss
                check_landing = False
                last = max(last, pos)
                if pos in wanted and pos not in out:
                    out[pos] = _rgb(frame)
                if pos >= target:
                    break
            if target not in out:
                if seek:
                    raise _SeekMiss
                t = float((pts[target] - pts[0]) * scan.time_base)
                raise VideoDecodeError(path, f"frame {target} of {scan.count} (t={t:.3f} s) does not "
                                             f"decode ({len(out)} of {len(targets)} wanted frames did)")
    return out


def _decode_by_count(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """One pass over every frame: ({position: rgb} for `wanted`, number of frames decoded)."""
    out: dict[int, np.ndarray] = {}
    n = 0
    with _open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            if n in wanted:
                out[n] = _rgb(frame)
            n += 1
    return out, n


def _count_decodable(path: Path, scan: _Scan) -> int:
    _, n = _decode_by_count(path, set())
    _check_decoded(path, scan, n)
    return n


def _check_decoded(path: Path, scan: _Scan, n: int) -> None:
    if n == 0:
        raise VideoDecodeError(path, "no frame decodes")
    if scan.count - n > max(1, COMPLETENESS_TOLERANCE * scan.count):
        raise VideoDecodeError(path, f"only {n} of {scan.count} frames decode")


Chooser = Callable[[np.ndarray, float], Sequence[int]]


def _decode(path: Path, scan: _Scan, choose: Chooser) -> np.ndarray:
    """uint8 [len(positions), H, W, 3] for the positions `choose(times, fps)` picks."""
    if scan.pts is not None:
        positions = list(choose(scan.times(), scan.fps))
        targets = sorted(set(positions))
        for seek in (True, False):
            try:
                out = _decode_by_pts(path, scan, targets, seek)
                return np.stack([out[p] for p in positions])
            except _SeekMiss:
                continue
            except _PtsMismatch:
                break
    # Count mode: positions follow the decoded count; a count that differs from the packets'
    # (a packet without a frame) costs a second pass with the right count.
    count = scan.count
    for _ in range(2):
        positions = list(choose(scan.times(count), scan.fps))
        out, n = _decode_by_count(path, set(positions))
        _check_decoded(path, scan, n)
        if n != count:
            positions = list(choose(scan.times(n), scan.fps))
        if all(p in out for p in positions):
            return np.stack([out[p] for p in positions])
        count = n
    raise VideoDecodeError(path, "the number of decodable frames changes between passes")


def _reason(e: BaseException) -> str:
    """A short reason for a PyAV/OS error (the path is already in VideoDecodeError's message)."""
    if isinstance(e, FileNotFoundError):
        head = "file not found"
    elif isinstance(e, EOFError):
        head = "unexpected end of file (truncated?)"
    elif isinstance(e, av.error.InvalidDataError):
        head = "corrupt or not a video"
    else:
        head = "cannot decode"
    return f"{head} ({type(e).__name__}: {getattr(e, 'strerror', None) or e})"


def _read(path, choose: Chooser) -> np.ndarray:
    path = Path(path)
    try:
        with _open(path) as container:
            scan = _scan(path, container)
        return _decode(path, scan, choose)
    except _DECODE_ERRORS as e:
        raise VideoDecodeError(path, _reason(e)) from e


# ---------------------------------------------------------------------------------------------
# public readers


def read_video(path, num_frames: int, *, start: float | None = None, end: float | None = None,
               sampling: str = "linspace") -> np.ndarray:
    """Sample `num_frames` frames of a video file -> uint8 [num_frames, H, W, 3] (RGB).

    sampling="linspace" (default, the training/reference rule): indices linspace(0, N-1)
    truncated over the frames whose timestamp (seconds from the first frame) lies in
    [start, end]; a window between two frames takes the nearest frame, a window outside the video
    raises. sampling="segment_middle": MVBench's decord rule (`segment_middle_indices` with
    max_frame = N-1 and the stream's average fps). Raises VideoDecodeError naming the file.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    _check_bounds(start, end)
    if sampling == "linspace":
        return _read(path, _linspace_chooser(Path(path), num_frames, start, end))

    def choose(times, fps):
        return segment_middle_indices(len(times) - 1, num_frames, fps, 0, start, end)

    return _read(path, choose)


def read_frames(path, indices: Sequence[int]) -> np.ndarray:
    """Frames at the given presentation indices (0-based, any order, repeats allowed) ->
    uint8 [len(indices), H, W, 3]. An index past the last decodable frame raises."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no indices given")
    path = Path(path)

    def choose(times, fps):
        bad = [i for i in indices if not 0 <= i < len(times)]
        if bad:
            raise VideoDecodeError(path, f"frame indices {bad[:5]} outside 0..{len(times) - 1}")
        return indices

    return _read(path, choose)


def video_info(path) -> dict:
    """{"frames", "fps", "duration", "width", "height"} of a video file.

    `frames` counts frames actually present (packets with a timestamp each in mp4/mov/mkv/webm;
    a full decode in other containers), never the header's claim; duration = frames' span + one
    frame period.
    """
    path = Path(path)
    try:
        with _open(path) as container:
            scan = _scan(path, container)
        frames = scan.count if scan.pts is not None else _count_decodable(path, scan)
    except _DECODE_ERRORS as e:
        raise VideoDecodeError(path, _reason(e)) from e
    times = scan.times(frames)
    return {"frames": frames, "fps": scan.fps, "duration": float(times[-1]) + 1.0 / scan.fps,
            "width": scan.width, "height": scan.height}


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def read_frame_folder(folder, num_frames: int, start: float | None = None, end: float | None = None,
                      fps: float = 3) -> np.ndarray:
    """MVBench-style folder of frames (`00001.jpg`, ...) -> uint8 [num_frames, H, W, 3].

    Segment-middle rule with first index 1 and max_frame = number of images (§3.1); index i is
    the i-th image in natural name order (= `{i:05d}.jpg` for the benchmark's folders).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    _check_bounds(start, end)
    if not folder.is_dir():
        raise VideoDecodeError(folder, "frame folder not found" if not folder.exists() else "not a folder")
    files = sorted((f for f in folder.iterdir() if f.suffix.lower() in FRAME_EXTENSIONS), key=_natural_key)
    if not files:
        raise VideoDecodeError(folder, f"no frame images ({', '.join(FRAME_EXTENSIONS)}) in the folder")
    idx = segment_middle_indices(len(files), num_frames, fps, first_idx=1, start=start, end=end)
    frames, cache = [], {}
    for i in idx:
        if i not in cache:
            f = files[i - 1]
            try:
                with Image.open(f) as im:
                    cache[i] = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise VideoDecodeError(f, f"cannot read frame image ({type(e).__name__}: {e})") from e
        if frames and cache[i].shape != frames[0].shape:
            raise VideoDecodeError(folder, f"frames differ in size: {files[i - 1].name} is "
                                           f"{cache[i].shape[:2]}, the first is {frames[0].shape[:2]}")
        frames.append(cache[i])
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------
# writing


def write_video(path, frames, fps, codec: str | None = None, *, gop: int | None = None,
                pix_fmt: str | None = None, options: dict | None = None) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames to `path` (container from the extension).

    codec None picks libx264 for mp4/mov/mkv, libvpx-vp9 for webm, mpeg4 for avi. `fps` may be a
    float (7.5, 29.97) or a Fraction (30000/1001). yuv420p needs even sizes: odd sizes use
    yuv444p where the codec supports it (libx264, libvpx-vp9) and raise otherwise. `gop` sets the
    keyframe interval (frames).
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    codec = codec or _DEFAULT_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for '{path.suffix}'; pass codec=")
    if pix_fmt is None:
        if h % 2 or w % 2:
            if codec not in ("libx264", "libx265", "libvpx-vp9"):
                raise ValueError(f"{codec} needs even frame sizes for yuv420p, got {w}x{h}")
            pix_fmt = "yuv444p"
        else:
            pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        for a in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
