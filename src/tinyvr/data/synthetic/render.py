"""Rasterise a simulated scene with numpy and encode it to H.264 .mp4 with PyAV.

Shapes are drawn with hard edges (no anti-aliasing) so that colours stay pure; a pixel belongs to
a shape when its centre lies inside it. `SceneView` renders frames lazily and caches them, so
that the question checks can ask which fraction of each object is visible in a few sampled
frames without rendering the whole clip.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from .scene import BACKGROUND, PALETTE, Scene, Track

# Fixed encoder settings: single-threaded libx264 at a constant quantizer is bit-exact from run to
# run. Not CRF: its macroblock-tree rate control made the bytes of some clips vary between calls
# in one process (seen with PyAV 18's bundled x264), which broke "same seed, same bytes".
X264_OPTIONS = {"qp": "18", "preset": "veryfast"}


def shape_mask(shape: str, x: float, y: float, size: float, frame_size: int) -> tuple[slice, slice, np.ndarray]:
    """(rows, cols, bool mask) of a shape centred at (x, y) with bounding-box side `size`."""
    h = size / 2.0
    r0, r1 = max(0, int(np.floor(y - h))), min(frame_size, int(np.ceil(y + h)) + 1)
    c0, c1 = max(0, int(np.floor(x - h))), min(frame_size, int(np.ceil(x + h)) + 1)
    yy = (np.arange(r0, r1) + 0.5)[:, None] - y
    xx = (np.arange(c0, c1) + 0.5)[None, :] - x
    if shape == "square":
        m = (np.abs(xx) <= h) & (np.abs(yy) <= h)
    elif shape == "circle":
        m = xx * xx + yy * yy <= h * h
    elif shape == "triangle":  # apex up, base down
        depth = (yy + h) / (2 * h)  # 0 at the apex, 1 at the base
        m = (depth >= 0) & (depth <= 1) & (np.abs(xx) <= h * depth)
    elif shape == "diamond":
        m = np.abs(xx) + np.abs(yy) <= h
    else:  # pragma: no cover - guarded by the generator
        raise ValueError(f"unknown shape {shape!r}")
    return slice(r0, r1), slice(c0, c1), m


class SceneView:
    """Lazily rendered frames of a simulated scene, with per-object visibility."""

    def __init__(self, scene: Scene, track: Track):
        self.scene, self.track = scene, track
        self._labels: dict[int, np.ndarray] = {}
        self._vis: dict[int, np.ndarray] = {}
        self._order = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].z, i))

    def labels(self, t: int) -> np.ndarray:
        """int8 [S, S]: index of the object seen at each pixel, -1 for background."""
        if t not in self._labels:
            S = self.scene.frame_size
            lab = np.full((S, S), -1, dtype=np.int8)
            area = np.zeros(len(self.scene.objects))
            for i in self._order:
                if not self.track.present[t, i]:
                    continue
                o = self.scene.objects[i]
                x, y = self.track.pos[t, i]
                rs, cs, m = shape_mask(o.shape, x, y, o.size, S)
                lab[rs, cs][m] = i
                area[i] = m.sum()
            vis = np.zeros(len(self.scene.objects))
            for i in range(len(self.scene.objects)):
                if area[i] > 0:
                    vis[i] = float((lab == i).sum()) / area[i]
            self._labels[t], self._vis[t] = lab, vis
        return self._labels[t]

    def visible(self, t: int) -> np.ndarray:
        """float [n]: fraction of each object's pixels visible at frame t (0 when absent)."""
        self.labels(t)
        return self._vis[t]

    def _lut(self, ts) -> np.ndarray:
        """uint8 [len(ts), n+1, 3]: colour of background (row 0) and of each object per frame."""
        n = len(self.scene.objects)
        lut = np.zeros((len(ts), n + 1, 3), dtype=np.uint8)
        lut[:, 0] = BACKGROUND
        for r, t in enumerate(ts):
            for i, c in enumerate(self.track.colour[t]):
                if c is not None:
                    lut[r, i + 1] = PALETTE[c]
        return lut

    def frame(self, t: int) -> np.ndarray:
        """uint8 [S, S, 3]."""
        return self._lut([t])[0][self.labels(t).astype(np.intp) + 1]

    def frames(self) -> np.ndarray:
        """uint8 [T, S, S, 3]."""
        ts = list(range(self.scene.num_frames))
        lut = self._lut(ts)  # [T, n+1, 3]
        rows = lut.shape[1]
        idx = np.stack([self.labels(t) for t in ts]).astype(np.intp)  # [T, S, S]
        idx += 1 + rows * np.arange(len(ts))[:, None, None]  # row of `lut` flattened to [T*(n+1), 3]
        out = np.empty(idx.shape + (3,), dtype=np.uint8)
        for ch in range(3):
            np.take(lut[:, :, ch].ravel(), idx, out=out[..., ch])
        return out


def fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1000)


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """H.264 (yuv420p) .mp4 bytes of uint8 [T, H, W, 3] frames; same input => same bytes."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps_fraction(fps))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = dict(X264_OPTIONS)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def decode_mp4(data_or_path) -> tuple[np.ndarray, Fraction]:
    """All frames (uint8 [T, H, W, 3]) and the average frame rate of an .mp4 (bytes or path)."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else str(data_or_path)
    with av.open(src) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames), rate
