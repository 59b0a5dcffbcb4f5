"""Wording helpers shared by questions, reasoning traces and captions."""

from __future__ import annotations

import math

import numpy as np

from .scene import Scene, Track


def pick(rng: np.random.Generator, options):
    """One element of a sequence, drawn with the item's own RNG."""
    return options[int(rng.integers(len(options)))]


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def constant_colour(track: Track, i: int) -> str | None:
    """Object i's colour if it never changes, else None."""
    cols = {row[i] for row in track.colour if row[i] is not None}
    return next(iter(cols)) if len(cols) == 1 else None


def name(scene: Scene, track: Track, i: int, *, definite: bool = True) -> str:
    """'the red square' when the colour never changes, else 'the square' (shapes are unique)."""
    shape = scene.objects[i].shape
    c = constant_colour(track, i)
    if not definite:  # first mention: the colour it starts with
        word = f"{scene.objects[i].colours[0]} {shape}"
        return f"{article(word)} {word}"
    return f"the {c} {shape}" if c else f"the {shape}"


def combo_name(colour: str, shape: str, *, definite: bool = True) -> str:
    word = f"{colour} {shape}"
    return f"the {word}" if definite else f"{article(word)} {word}"


def bucket(t: int, num_frames: int) -> int:
    """Coarse part of the clip for frame t: 0 start, 1 early, 2 middle, 3 later, 4 end."""
    f = t / max(1, num_frames - 1)
    return 0 if f <= 0.02 else 1 if f < 0.3 else 2 if f < 0.7 else 3 if f < 0.9 else 4


def when(rng: np.random.Generator, t: int, num_frames: int, prev: int | None = None) -> str:
    """A time phrase for frame t ('early on', 'around the middle', ...); 'shortly after' when
    the previous event mentioned (at frame `prev`) falls in the same part of the clip."""
    b = bucket(t, num_frames)
    if prev is not None and prev < t and bucket(prev, num_frames) == b:
        return pick(rng, ("shortly after", "a little later", "then"))
    return pick(
        rng,
        (
            ("at the very start",),
            ("early on", "in the early frames", "soon after the start"),
            ("around the middle", "in the middle of the video", "midway through"),
            ("later", "in the later frames", "later on"),
            ("near the end", "towards the end", "in the final frames"),
        )[b],
    )


def region(x: float, y: float, frame_size: int) -> str:
    """One of nine regions as a phrase: 'in the top left', 'at the top', 'on the left side', ..."""
    third = frame_size / 3.0
    col = 0 if x < third else (2 if x >= 2 * third else 1)
    row = 0 if y < third else (2 if y >= 2 * third else 1)
    return (
        ("in the top left", "at the top", "in the top right"),
        ("on the left side", "in the centre", "on the right side"),
        ("in the bottom left", "at the bottom", "in the bottom right"),
    )[row][col]


def quadrant(x: float, y: float, frame_size: int) -> str:
    half = frame_size / 2.0
    return ("top" if y < half else "bottom") + " " + ("left" if x < half else "right")


def direction(vx: float, vy: float) -> str | None:
    """'to the right', 'up and to the left', ... for a velocity; None when (almost) still."""
    if math.hypot(vx, vy) < 1e-6:
        return None
    ang = math.degrees(math.atan2(-vy, vx)) % 360.0  # counter-clockwise from +x, y up
    sector = int(((ang + 22.5) % 360.0) // 45.0)
    return (
        "to the right",
        "up and to the right",
        "upward",
        "up and to the left",
        "to the left",
        "down and to the left",
        "downward",
        "down and to the right",
    )[sector]


def join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def wall_phrase(wall: str) -> str:
    return f"the {wall} wall"
