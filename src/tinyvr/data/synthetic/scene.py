"""The world of the synthetic videos: palette, objects, and a frame-by-frame simulation.

A scene is a dark square canvas with 1–3 flat-coloured shapes. Shapes move with a constant
velocity (px per frame), bounce off the four walls, may appear or disappear at given frames, and
may change colour when a *trigger* fires: hitting a wall (`trigger="wall"`) or colliding with
another object (`trigger="collide"`). In `mode="bounce"` objects collide like equal-mass boxes
(they swap their velocity components along the axis where they touch); in `mode="pass"` they
pass through each other and the one drawn later hides the other (occlusion). Nothing else ever
changes a colour, so every colour change has a visible cause.

Invariants that keep questions unambiguous: shapes are unique within a scene (an object can be
named by its shape), and every object owns an exclusive set of colours (two objects never show
the same colour at the same time).

Coordinates are pixels, x to the right and y downwards; an object's (x, y) is its centre and its
`size` the side of its bounding box. Events happen "at frame t": frame t is the first frame that
shows the new state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Clearly distinct colours on a dark background (names are what the questions say).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 235, 30),
    "green": (30, 200, 50),
    "cyan": (30, 220, 230),
    "blue": (40, 80, 255),
    "purple": (190, 50, 230),
    "white": (240, 240, 240),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (12, 12, 20)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond")
WALLS: tuple[str, ...] = ("left", "right", "top", "bottom")

# Colour x shape combinations that never occur in a training split (nor in `test`); every
# `test_heldout` item shows one of them on the object its question is about.
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("yellow", "diamond"),
)

# Frame rates (non-integer ones included) and clip limits.
FPS_CHOICES: tuple[float, ...] = (7.5, 8.0, 10.0, 12.5)
MIN_FRAMES, MAX_FRAMES = 16, 80
MIN_SECONDS, MAX_SECONDS = 2.0, 10.0
# Uniform frame samplings (np.linspace(0, T-1, K).astype(int)) under which every answer is checked.
VERIFY_NUM_FRAMES: tuple[int, ...] = (8, 16)


def sample_indices(num_frames: int, k: int) -> np.ndarray:
    """Frame indices a model sampling `k` frames uniformly sees (the reference's rule)."""
    return np.linspace(0, num_frames - 1, k).astype(int)


def is_heldout(colour: str, shape: str) -> bool:
    return (colour, shape) in HELDOUT_COMBOS


@dataclass
class Obj:
    shape: str
    colours: tuple[str, ...]  # colours[0] at the start; a trigger moves to the next (cyclic)
    size: float  # bounding-box side, px
    x: float  # centre at frame t_in
    y: float
    vx: float = 0.0  # px per frame
    vy: float = 0.0
    t_in: int = 0  # first frame where the object is present
    t_out: int | None = None  # first frame where it is gone again (None: stays to the end)
    trigger: str | None = None  # None | "wall" | "collide"
    z: int = 0  # drawing order; larger is drawn on top


@dataclass
class Scene:
    frame_size: int
    fps: float
    num_frames: int
    objects: list[Obj]
    mode: str = "pass"  # "pass" (objects overlap, occlusion) | "bounce" (objects collide)

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


@dataclass
class Event:
    t: int
    kind: str  # "appear" | "disappear" | "wall" | "collide" | "colour"
    obj: int
    other: int | None = None  # collision partner (for "colour" events: the object hit)
    wall: str | None = None
    colour: str | None = None  # new colour ("colour" events)
    prev: str | None = None  # previous colour ("colour" events)
    cause: str | None = None  # "wall" | "collide" ("colour" events)


@dataclass
class Track:
    """The simulated ground truth, one row per frame."""

    pos: np.ndarray  # float [T, n, 2] (x, y)
    vel: np.ndarray  # float [T, n, 2]
    present: np.ndarray  # bool [T, n]
    colour: list[list[str | None]]  # [T][n] colour name, None when absent
    events: list[Event] = field(default_factory=list)
    spawn_overlap: bool = False  # an object appeared on top of another in "bounce" mode

    def events_of(self, i: int, *kinds: str) -> list[Event]:
        """Events object i takes part in (as the actor, or either side of a collision)."""
        mine = [e for e in self.events if e.obj == i or (e.kind == "collide" and e.other == i)]
        return [e for e in mine if not kinds or e.kind in kinds]

    def colour_runs(self, i: int) -> list[tuple[int, int, str]]:
        """[(first frame, last frame, colour)] of object i's colour while present."""
        runs: list[tuple[int, int, str]] = []
        for t, row in enumerate(self.colour):
            c = row[i]
            if c is None:
                continue
            if runs and runs[-1][2] == c and runs[-1][1] == t - 1:
                runs[-1] = (runs[-1][0], t, c)
            else:
                runs.append((t, t, c))
        return runs


def _overlap(p: np.ndarray, q: np.ndarray, hp: float, hq: float) -> bool:
    return abs(p[0] - q[0]) < hp + hq and abs(p[1] - q[1]) < hp + hq


def simulate(scene: Scene) -> Track:
    """Run the scene frame by frame (deterministic, pure Python on <= 3 objects)."""
    S, T, objs = float(scene.frame_size), scene.num_frames, scene.objects
    n = len(objs)
    p = np.array([[o.x, o.y] for o in objs], dtype=float).reshape(n, 2)
    v = np.array([[o.vx, o.vy] for o in objs], dtype=float).reshape(n, 2)
    half = [o.size / 2.0 for o in objs]
    cidx = [0] * n
    pos = np.zeros((T, n, 2))
    vel = np.zeros((T, n, 2))
    present = np.zeros((T, n), dtype=bool)
    colour: list[list[str | None]] = []
    events: list[Event] = []
    spawn_overlap = False

    def alive(i: int, t: int) -> bool:
        o = objs[i]
        return o.t_in <= t and (o.t_out is None or t < o.t_out)

    def recolour(i: int, t: int, cause: str, *, other: int | None = None, wall: str | None = None) -> None:
        o = objs[i]
        if o.trigger != cause or len(o.colours) < 2:
            return
        prev = o.colours[cidx[i]]
        cidx[i] = (cidx[i] + 1) % len(o.colours)
        events.append(Event(t, "colour", i, other, wall, colour=o.colours[cidx[i]], prev=prev, cause=cause))

    for t in range(T):
        for i, o in enumerate(objs):
            if t == o.t_in and t > 0:
                events.append(Event(t, "appear", i))
                if scene.mode == "bounce":
                    for j in range(n):
                        if j != i and alive(j, t) and objs[j].t_in < t and _overlap(p[i], p[j], half[i], half[j]):
                            spawn_overlap = True
            if o.t_out is not None and t == o.t_out:
                events.append(Event(t, "disappear", i))
        if t == 0 and scene.mode == "bounce":
            for i in range(n):
                for j in range(i + 1, n):
                    if alive(i, 0) and alive(j, 0) and _overlap(p[i], p[j], half[i], half[j]):
                        spawn_overlap = True
        if t > 0:
            for i in range(n):
                if not (alive(i, t) and alive(i, t - 1)):
                    continue
                p[i] += v[i]
                h = half[i]
                for axis, lo_wall, hi_wall in ((0, "left", "right"), (1, "top", "bottom")):
                    if p[i, axis] - h < 0 and v[i, axis] < 0:
                        p[i, axis] = 2 * h - p[i, axis]
                        v[i, axis] = -v[i, axis]
                        events.append(Event(t, "wall", i, wall=lo_wall))
                        recolour(i, t, "wall", wall=lo_wall)
                    elif p[i, axis] + h > S and v[i, axis] > 0:
                        p[i, axis] = 2 * (S - h) - p[i, axis]
                        v[i, axis] = -v[i, axis]
                        events.append(Event(t, "wall", i, wall=hi_wall))
                        recolour(i, t, "wall", wall=hi_wall)
            if scene.mode == "bounce":
                for i in range(n):
                    for j in range(i + 1, n):
                        if not (alive(i, t) and alive(j, t)):
                            continue
                        if not _overlap(p[i], p[j], half[i], half[j]):
                            continue
                        # elastic, equal masses, along the axis of least penetration (boxes)
                        d, dv = p[j] - p[i], v[j] - v[i]
                        pen = (half[i] + half[j]) - np.abs(d)
                        ax = int(np.argmin(pen))
                        if d[ax] * dv[ax] >= 0:  # already separating along that axis
                            continue
                        v[i, ax], v[j, ax] = v[j, ax], v[i, ax]
                        events.append(Event(t, "collide", i, other=j))
                        recolour(i, t, "collide", other=j)
                        recolour(j, t, "collide", other=i)
        row: list[str | None] = []
        for i, o in enumerate(objs):
            a = alive(i, t)
            present[t, i] = a
            row.append(o.colours[cidx[i]] if a else None)
        colour.append(row)
        pos[t] = p
        vel[t] = v
    events.sort(key=lambda e: (e.t, e.obj))
    return Track(pos, vel, present, colour, events, spawn_overlap)
