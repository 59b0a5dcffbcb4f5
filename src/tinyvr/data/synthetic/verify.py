"""Re-derive answers from decoded pixels (used by property tests and dataset audits).

`answer_from_frames(frames, item)` reads the frame the question is about (the first or the last
one), segments bright regions on luma (kept at full resolution by yuv420p, while chroma is
halved and smeared at edges), names each region's colour by the nearest palette colour of its
interior and its shape by the best-fitting ideal shape, finds the asked object and returns the
option letter it supports. Supported families: `color` and `position`.
"""

from __future__ import annotations

import re

import numpy as np

from .scene import COLOURS, PALETTE, SHAPES

_REF = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)  # [8, 3]
LUMA_THRESHOLD = 45.0  # background luma ~13, the darkest palette colour ~88
SUPPORTED_FAMILIES = ("color", "position")


def luma(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def nearest_colour(rgb) -> str:
    """Palette name nearest to an RGB value."""
    d = np.linalg.norm(_REF - np.asarray(rgb, dtype=np.float32)[None], axis=1)
    return COLOURS[int(d.argmin())]


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:] &= m[:-1]
    e[:-1] &= m[1:]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e


def _grow(seed: np.ndarray, within: np.ndarray) -> np.ndarray:
    """The part of `within` 4-connected to `seed` (thin edge rings of other colours stay out)."""
    cur = seed & within
    while True:
        nxt = cur.copy()
        nxt[1:] |= cur[:-1]
        nxt[:-1] |= cur[1:]
        nxt[:, 1:] |= cur[:, :-1]
        nxt[:, :-1] |= cur[:, 1:]
        nxt &= within
        if (nxt == cur).all():
            return cur
        cur = nxt


def shape_iou(blob: np.ndarray, shape: str) -> float:
    """IoU of a blob with the ideal `shape` stretched to the blob's bounding box (compression
    erodes edges unevenly, so height and width are fitted separately)."""
    ys, xs = np.nonzero(blob)
    if len(ys) == 0:
        return 0.0
    r0, r1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    v = (np.arange(r0, r1) + 0.5 - (r0 + r1) / 2.0)[:, None] / ((r1 - r0) / 2.0)
    u = (np.arange(c0, c1) + 0.5 - (c0 + c1) / 2.0)[None, :] / ((c1 - c0) / 2.0)
    if shape == "square":
        ideal = np.ones((r1 - r0, c1 - c0), dtype=bool)
    elif shape == "circle":
        ideal = u * u + v * v <= 1.0
    elif shape == "triangle":
        ideal = np.abs(u) <= (v + 1.0) / 2.0 + 0.5 / (c1 - c0)
    else:
        ideal = np.abs(u) + np.abs(v) <= 1.0 + 1.0 / (c1 - c0)
    box = blob[r0:r1, c0:c1]
    return float((ideal & box).sum()) / float((ideal | box).sum())


def classify_shape(mask: np.ndarray) -> str:
    """The shape whose ideal mask (in the blob's bounding box) overlaps the blob best."""
    return max(SHAPES, key=lambda s: shape_iou(mask, s))


def blobs(frame: np.ndarray, min_pixels: int = 12) -> list[tuple[np.ndarray, str]]:
    """Connected bright regions of a frame with their colour: [(bool mask, palette name)].

    Shapes are segmented on luma, which H.264 keeps at full resolution (yuv420p halves chroma);
    the colour is the nearest palette colour to the median of the region's interior."""
    fg = luma(frame) > LUMA_THRESHOLD
    out = []
    left = fg.copy()
    while left.any():
        r, c = np.argwhere(left)[0]
        seed = np.zeros_like(fg)
        seed[r, c] = True
        blob = _grow(seed, fg)
        left &= ~blob
        if blob.sum() < min_pixels:
            continue
        core = _erode(_erode(blob))
        if core.sum() < 4:
            core = blob
        out.append((blob, nearest_colour(np.median(frame[core], axis=0))))
    return out


def find_blob(frame: np.ndarray, colour: str | None, shape: str) -> tuple[np.ndarray, float] | None:
    """(mask, IoU with the ideal shape) of the region of `colour` (any if None) that looks most
    like `shape`, or None when no region of that colour is classified as that shape."""
    best, best_iou = None, 0.0
    for blob, c in blobs(frame):
        if colour is not None and c != colour:
            continue
        scores = {s: shape_iou(blob, s) for s in SHAPES}
        if max(scores, key=scores.get) != shape:
            continue
        if scores[shape] > best_iou:
            best, best_iou = blob, scores[shape]
    return None if best is None else (best, best_iou)


def _subject(question: str) -> tuple[str | None, str]:
    """(colour or None, shape) of the object a question names ('the red square' / 'the square')."""
    m = re.search(r"\bthe (?:(%s) )?(%s)\b" % ("|".join(COLOURS), "|".join(SHAPES)), question)
    if m is None:
        raise ValueError(f"no object named in question {question!r}")
    return m.group(1), m.group(2)


def _letter(item: dict, text: str) -> str | None:
    opts = list(item["options"])
    return "ABCDE"[opts.index(text)] if text in opts else None


def answer_from_frames(frames: np.ndarray, item: dict) -> str | None:
    """The option letter the pixels support for a `color` or `position` item (None: not found).

    `frames` is uint8 [T, H, W, 3] (all frames, or any uniform sample including the first and the
    last frame); `item` needs `family`, `subtype`, `question` and `options`.
    """
    family = item["family"]
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"answer_from_frames supports {SUPPORTED_FAMILIES}, not {family!r}")
    frame = frames[0] if item.get("subtype") == "start" else frames[-1]
    colour, shape = _subject(item["question"])
    if family == "color":
        found = []
        for text in item["options"]:
            hit = find_blob(frame, text, shape)
            if hit is not None:
                found.append((hit[1], text))
        return _letter(item, max(found)[1]) if found else None
    hit = find_blob(frame, colour, shape)
    if hit is None:
        return None
    blob = hit[0]
    S = frame.shape[0]
    ys, xs = np.nonzero(blob)
    cx, cy = (xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0
    tol = 5.0 * S / 64.0
    if abs(cx - S / 2) <= tol and abs(cy - S / 2) <= tol:
        return _letter(item, "in the centre")
    return _letter(item, f"in the {'top' if cy < S / 2 else 'bottom'} {'left' if cx < S / 2 else 'right'}")
