"""Question families: build a scene suited to a family, then ask a question it answers.

Each family is a function `(rng, ctx) -> Candidate | None`. It draws a scene, simulates it, and
checks that the answer is visible under every uniform frame sampling in `VERIFY_NUM_FRAMES`
(`np.linspace(0, T-1, K).astype(int)`): an event lasts long enough to be seen, the object asked
about is not hidden at the frame that matters, counts can be read off the sampled frames, and so
on. When a check fails the family returns None and the caller draws a new scene from the same
RNG stream (so the result depends only on the item's seed).

Object 0 is always the object the question is about (or the correct answer); in the
`test_heldout` split it starts with a held-out colour x shape combination.

Families (NextQA-like types in brackets):
  color (descriptive)   colour of an object at the start / end
  direction (path)      which way an object moves (left / right / up / down / stays)
  position (state)      quadrant (or centre) of an object at the start / end
  order (temporal)      which object appears first / last; what happens right after X appears
  count (events)        how many colour changes / objects in total / objects at the end
  cause (causal)        why an object changes colour / direction (wall or collision)
  compare               which object moves faster / slower / stays still
  change (start vs end) how an object's colour changes between the start and the end
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .render import SceneView
from .scene import (
    COLOURS,
    FPS_CHOICES,
    HELDOUT_COMBOS,
    MAX_FRAMES,
    MAX_SECONDS,
    MIN_FRAMES,
    MIN_SECONDS,
    SHAPES,
    VERIFY_NUM_FRAMES,
    WALLS,
    Obj,
    Scene,
    Track,
    is_heldout,
    sample_indices,
    simulate,
)
from .text import cap, combo_name, direction, join, name, pick, quadrant, region, when

FAMILIES: tuple[str, ...] = ("color", "direction", "position", "order", "count", "cause", "compare", "change")

DIRECTION_OPTIONS = ("to the left", "to the right", "upward", "downward", "it stays in place")
POSITION_OPTIONS = ("in the top left", "in the top right", "in the bottom left", "in the bottom right", "in the centre")


@dataclass
class Ctx:
    frame_size: int = 64
    heldout: bool = False  # test_heldout: object 0 starts as a held-out colour x shape combination

    @property
    def u(self) -> float:  # pixels per unit of a 64-px frame
        return self.frame_size / 64.0


@dataclass
class QA:
    family: str
    subtype: str
    question: str
    answer: str
    distractors: list[str]  # wrong options, most plausible first (at least 4)
    evidence: list[str]  # reasoning sentences, grounded in what the sampled frames show
    check: str | None = None  # an honest double-check sentence, used in some traces


@dataclass
class Candidate:
    scene: Scene
    track: Track
    view: SceneView
    qa: QA


# ----------------------------------------------------------------------------------------------
# scene building blocks


def pick_clip(rng: np.random.Generator) -> tuple[float, int]:
    fps = FPS_CHOICES[int(rng.integers(len(FPS_CHOICES)))]
    lo = max(MIN_FRAMES, math.ceil(MIN_SECONDS * fps))
    hi = min(MAX_FRAMES, math.floor(MAX_SECONDS * fps))
    return fps, int(rng.integers(lo, hi + 1))


def colour_ok(ctx: Ctx, colour: str, shape: str) -> bool:
    """May this colour x shape pair be shown (or named) in this split?"""
    return ctx.heldout or not is_heldout(colour, shape)


def pick_identities(rng: np.random.Generator, ctx: Ctx, n_colours: list[int]) -> list[tuple[str, tuple[str, ...]]]:
    """Distinct shapes and exclusive colour sets (n_colours[k] colours for object k)."""
    n = len(n_colours)
    shapes = [SHAPES[k] for k in rng.permutation(len(SHAPES))]
    first_colour = None
    if ctx.heldout:
        first_colour, first_shape = HELDOUT_COMBOS[int(rng.integers(len(HELDOUT_COMBOS)))]
        shapes.remove(first_shape)
        shapes.insert(0, first_shape)
    shapes = shapes[:n]
    used: list[str] = []
    out = []
    for k, (shape, m) in enumerate(zip(shapes, n_colours)):
        cols: list[str] = []
        if k == 0 and first_colour is not None:
            cols.append(first_colour)
        allowed = [c for c in COLOURS if c not in used and c not in cols and colour_ok(ctx, c, shape)]
        need = m - len(cols)
        for j in rng.permutation(len(allowed))[:need]:
            cols.append(allowed[int(j)])
        used.extend(cols)
        out.append((shape, tuple(cols)))
    return out


def obj_size(rng: np.random.Generator, ctx: Ctx, shape: str) -> float:
    base = {"square": 12.0, "circle": 13.0, "triangle": 14.0, "diamond": 14.0}[shape]
    return ctx.u * float(rng.uniform(base, base + 3.0))


def rand_xy(rng: np.random.Generator, S: int, size: float) -> tuple[float, float]:
    h = size / 2.0
    return float(rng.uniform(h + 1, S - h - 1)), float(rng.uniform(h + 1, S - h - 1))


def rand_vel(rng: np.random.Generator, travel_px: float, T: int) -> tuple[float, float]:
    speed = travel_px / max(1, T - 1)
    ang = float(rng.uniform(0, 2 * math.pi))
    return speed * math.cos(ang), speed * math.sin(ang)


def make_obj(
    rng: np.random.Generator,
    ctx: Ctx,
    ident: tuple[str, tuple[str, ...]],
    T: int,
    *,
    travel: tuple[float, float] = (0.3, 2.0),
    trigger: str | None = None,
) -> Obj:
    shape, cols = ident
    S = ctx.frame_size
    size = obj_size(rng, ctx, shape)
    x, y = rand_xy(rng, S, size)
    vx, vy = rand_vel(rng, float(rng.uniform(*travel)) * S, T)
    return Obj(shape, cols, size, x, y, vx, vy, trigger=trigger if len(cols) > 1 else None, z=int(rng.integers(100)))


def random_other(
    rng: np.random.Generator, ctx: Ctx, ident: tuple[str, tuple[str, ...]], T: int, *, come_and_go: bool = True
) -> Obj:
    """A background object: random motion, maybe a colour trigger, maybe appears / disappears."""
    trigger = ("wall", "collide")[int(rng.integers(2))] if len(ident[1]) > 1 else None
    still = rng.random() < 0.15
    o = make_obj(rng, ctx, ident, T, travel=(0.0, 0.0) if still else (0.3, 2.0), trigger=trigger)
    if come_and_go:
        if rng.random() < 0.2:
            o.t_in = int(rng.integers(T // 5, 3 * T // 5))
        if rng.random() < 0.15 and o.t_in + T // 4 < T - 3:
            o.t_out = int(rng.integers(o.t_in + T // 4, T - 2))
    return o


def finish(scene: Scene) -> tuple[Track, SceneView] | None:
    """Simulate and apply the checks every scene must pass."""
    track = simulate(scene)
    if track.spawn_overlap:
        return None
    view = SceneView(scene, track)
    for k in VERIFY_NUM_FRAMES:
        idx = sample_indices(scene.num_frames, k)
        for i in range(len(scene.objects)):
            if not any(track.present[t, i] and view.visible(int(t))[i] >= 0.5 for t in idx):
                return None  # an object nobody could see
    return track, view


def nonpresent_names(rng: np.random.Generator, ctx: Ctx, scene: Scene, k: int) -> list[str]:
    """k names of colour x shape objects that are not in the scene (plausible distractors)."""
    shown = [(c, o.shape) for o in scene.objects for c in o.colours]
    pool = [(c, s) for s in SHAPES for c in COLOURS if (c, s) not in shown and not is_heldout(c, s)]
    return [combo_name(*pool[int(j)]) for j in rng.permutation(len(pool))[:k]]


def shuffled(rng: np.random.Generator, items: list) -> list:
    return [items[int(j)] for j in rng.permutation(len(items))]


def sampled_colour_ok(track: Track, i: int, t: int, neighbour: int) -> bool:
    return track.present[neighbour, i] and track.colour[neighbour][i] == track.colour[t][i]


def isolated(scene: Scene, track: Track, view: SceneView, t: int, i: int, gap: float) -> bool:
    """Object i is fully visible at frame t and at least `gap` px away from every other object."""
    if not track.present[t, i] or view.visible(t)[i] < 0.98:
        return False
    return all(
        _gap_boxes(track, scene, t, i, k) >= gap for k in range(len(scene.objects)) if k != i and track.present[t, k]
    )


def colour_event_sentence(rng, scene: Scene, track: Track, e, prev: int | None = None) -> str:
    w = cap(when(rng, e.t, scene.num_frames, prev))
    if e.cause == "wall":
        verb = pick(rng, ("hits", "bounces off", "touches"))
        return f"{w}, it {verb} the {e.wall} wall and turns {e.colour}."
    return f"{w}, it collides with {name(scene, track, e.other)} and turns {e.colour}."


def colour_events(track: Track, i: int):
    return [e for e in track.events if e.kind == "colour" and e.obj == i]


def shape_colours_ok(ctx: Ctx, shape: str) -> list[str]:
    return [c for c in COLOURS if colour_ok(ctx, c, shape)]


# ----------------------------------------------------------------------------------------------
# families


def fam_color(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    n = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    mode = "bounce" if rng.random() < 0.5 else "pass"
    r = rng.random()
    trig = None if r < 0.15 else ("collide" if r < 0.45 and n >= 2 and mode == "bounce" else "wall")
    idents = pick_identities(
        rng, ctx, [1 if trig is None else int(rng.integers(2, 4))] + [int(rng.integers(1, 3)) for _ in range(n - 1)]
    )
    objs = [make_obj(rng, ctx, idents[0], T, travel=(0.8, 2.5), trigger=trig)]
    objs += [random_other(rng, ctx, idents[k], T) for k in range(1, n)]
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    end = plan["end"]
    tq = T - 1 if end else 0
    if not isolated(scene, track, view, tq, 0, 2 * ctx.u):
        return None
    for k in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, k)
        if not sampled_colour_ok(track, 0, tq, int(idx[-2] if end else idx[1])):
            return None
    runs = track.colour_runs(0)
    if end and len(runs) == 1 and rng.random() < 0.6:
        return None  # prefer clips where the colour does change
    ans = track.colour[tq][0]
    shape = scene.objects[0].shape
    the = f"the {shape}"
    if end:
        q = pick(
            rng,
            (
                f"What colour is {the} at the end of the video?",
                f"What is the colour of {the} in the last frames?",
                f"Which colour does {the} have when the video ends?",
                f"At the end of the clip, what colour is {the}?",
            ),
        )
    else:
        q = pick(
            rng,
            (
                f"What colour is {the} at the start of the video?",
                f"What colour is {the} when the video begins?",
                f"In the first frames, what is the colour of {the}?",
            ),
        )
    own = [c for (_, _, c) in runs if c != ans]
    others = [c for o in scene.objects[1:] for c in o.colours if c != ans]
    rest = shuffled(rng, [c for c in shape_colours_ok(ctx, shape) if c != ans and c not in own and c not in others])
    distractors = list(dict.fromkeys(own + shuffled(rng, others) + rest))
    distractors = [c for c in distractors if colour_ok(ctx, c, shape)]
    c0 = runs[0][2]
    ev = [pick(rng, (f"At the start {the} is {c0}.", f"In the first frames {the} is {c0}."))]
    changes = colour_events(track, 0)
    if end:
        ev += [
            colour_event_sentence(rng, scene, track, e, p.t if p else None) for p, e in zip([None] + changes, changes)
        ]
        if not changes:
            ev.append("It keeps the same colour for the whole video.")
        ev.append(pick(rng, (f"In the last frame it is {ans}.", f"At the end it is {ans}.")))
        if changes:
            check = (
                f"Wait, it was {c0} at the beginning, but the question asks about the end, and at the end it is {ans}."
            )
        else:
            check = f"Let me double-check: the very last frame still shows {combo_name(ans, shape, definite=False)}."
    else:
        if changes:
            ev.append(
                f"Later it changes colour ({when(rng, changes[0].t, T)} it turns {changes[0].colour}), "
                "but the question asks about the start."
            )
            check = f"Let me double-check: in the very first frame the {shape} is {c0}, not {changes[0].colour}."
        else:
            ev.append("It keeps this colour for the whole video.")
            check = f"Let me double-check: the first frame shows {combo_name(c0, shape, definite=False)}."
    qa = QA("color", "end" if end else "start", q, ans, distractors, ev, check)
    return Candidate(scene, track, view, qa)


def fam_direction(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    still = plan["still"]
    n = int(rng.choice([2, 3])) if still else int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    mode = "bounce" if rng.random() < 0.5 else "pass"
    idents = pick_identities(rng, ctx, [1] + [int(rng.integers(1, 3)) for _ in range(n - 1)])
    subj = make_obj(rng, ctx, idents[0], T)
    h = subj.size / 2.0
    if still:
        subj.vx = subj.vy = 0.0
        d = "it stays in place"
    else:
        d = DIRECTION_OPTIONS[int(rng.integers(4))]
        D = float(rng.uniform(0.35, 0.6)) * S
        drift = float(rng.uniform(-0.12, 0.12)) * D
        sign = 1.0 if d in ("to the right", "downward") else -1.0
        main = float(rng.uniform(h + 1, S - h - 1 - D)) if sign > 0 else float(rng.uniform(h + 1 + D, S - h - 1))
        perp = float(rng.uniform(h + 1 + max(0.0, -drift), S - h - 1 - max(0.0, drift)))
        vm, vp = sign * D / (T - 1), drift / (T - 1)
        if d in ("to the left", "to the right"):
            subj.x, subj.y, subj.vx, subj.vy = main, perp, vm, vp
        else:
            subj.x, subj.y, subj.vx, subj.vy = perp, main, vp, vm
    objs = [subj] + [random_other(rng, ctx, idents[k], T) for k in range(1, n)]
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    if track.events_of(0, "wall", "collide"):
        return None
    if still and not any(np.abs(track.pos[-1, k] - track.pos[0, k]).max() > 0.2 * S for k in range(1, n)):
        return None  # a "stays in place" answer needs something else that moves
    if not (isolated(scene, track, view, 0, 0, ctx.u) and isolated(scene, track, view, T - 1, 0, ctx.u)):
        return None  # start and end positions are the evidence: keep them clean
    for k in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, k)
        if sum(view.visible(int(t))[0] >= 0.4 for t in idx) < 0.75 * k:
            return None
    nm = name(scene, track, 0)
    q = pick(
        rng,
        (
            f"In which direction does {nm} move?",
            f"Which way does {nm} move?",
            f"Where does {nm} go during the video?",
            f"How does {nm} move in the video?",
        ),
    )
    opposite = {
        "to the left": "to the right",
        "to the right": "to the left",
        "upward": "downward",
        "downward": "upward",
    }
    if still:
        distractors = shuffled(rng, list(DIRECTION_OPTIONS[:4]))
    else:
        distractors = [opposite[d]] + shuffled(rng, [o for o in DIRECTION_OPTIONS if o not in (d, opposite[d])])
    (x0, y0), (x1, y1) = track.pos[0, 0], track.pos[-1, 0]
    if still:
        movers = [name(scene, track, k) for k in range(1, n)]
        ev = [
            f"In the first frame {nm} is {region(x0, y0, S)}.",
            f"In the middle frames and in the last frame it is still at exactly the same spot, "
            f"while {join(movers)} {'moves' if len(movers) == 1 else 'move'}.",
            "So it does not move at all.",
        ]
        check = "Let me double-check: its position in the first and the last frame is the same, so it stays in place."
    else:
        further = {
            "to the right": "further to the right",
            "to the left": "further to the left",
            "upward": "higher up",
            "downward": "lower down",
        }[d]
        ev = [
            pick(
                rng, (f"In the first frame {nm} is {region(x0, y0, S)}.", f"At the start {nm} is {region(x0, y0, S)}.")
            ),
            f"In the middle frames it is {further}, and in the last frame it is {region(x1, y1, S)}.",
            f"It keeps going the same way and never bounces, so it moves {d}.",
        ]
        check = f"Let me double-check by comparing the first and last frames: it is clearly {further} at the end."
    return Candidate(scene, track, view, QA("direction", "still" if still else "moving", q, d, distractors, ev, check))


def fam_position(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S, u = ctx.frame_size, ctx.u
    fps, T = pick_clip(rng)
    n = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    mode = "bounce" if rng.random() < 0.5 else "pass"
    trig = "wall" if rng.random() < 0.5 else None
    idents = pick_identities(rng, ctx, [1 if trig is None else 2] + [int(rng.integers(1, 3)) for _ in range(n - 1)])
    end = plan["end"]
    subj = make_obj(rng, ctx, idents[0], T, travel=(0.3, 2.0), trigger=trig)
    if plan["centre"]:  # aim at the centre
        cx, cy = (S / 2 + float(rng.uniform(-1.5, 1.5)) * u for _ in range(2))
        if end:
            subj.vx, subj.vy = (cx - subj.x) / (T - 1), (cy - subj.y) / (T - 1)
        else:
            subj.x, subj.y = cx, cy
    objs = [subj] + [random_other(rng, ctx, idents[k], T) for k in range(1, n)]
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    tq = T - 1 if end else 0
    if not isolated(scene, track, view, tq, 0, 2 * u):
        return None
    x, y = track.pos[tq, 0]
    h = scene.objects[0].size / 2.0
    dx, dy = x - S / 2, y - S / 2
    if abs(dx) <= 3 * u and abs(dy) <= 3 * u:
        ans = "in the centre"
    elif abs(dx) >= h + u and abs(dy) >= h + u:
        ans = "in the " + quadrant(x, y, S)
    else:
        return None
    nm = name(scene, track, 0)
    if end:
        q = pick(
            rng,
            (
                f"Where is {nm} at the end of the video?",
                f"In which part of the frame is {nm} when the video ends?",
                f"Where does {nm} end up?",
                f"Where is {nm} in the last frame?",
            ),
        )
    else:
        q = pick(
            rng,
            (
                f"Where is {nm} at the start of the video?",
                f"Where is {nm} in the first frame?",
                f"In which part of the frame does {nm} start?",
            ),
        )
    if ans == "in the centre":
        distractors = shuffled(rng, list(POSITION_OPTIONS[:4]))
    else:
        vert, hor = ans.split()[2], ans.split()[3]
        flip = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
        near = [f"in the {vert} {flip[hor]}", f"in the {flip[vert]} {hor}"]
        distractors = shuffled(rng, near) + shuffled(rng, [f"in the {flip[vert]} {flip[hor]}", "in the centre"])
    if ans == "in the centre":
        where = "right in the middle of the frame, so it is in the centre"
        check = (
            "Let me double-check: it is neither clearly left nor clearly right of the middle, "
            "and neither above nor below it."
        )
    else:
        vert, hor = ans.split()[2], ans.split()[3]
        half = "upper" if vert == "top" else "lower"
        where = f"in the {half} half of the frame and on the {hor} side, so it is in the {vert} {hor}"
        check = f"Let me double-check: it is clearly on the {hor} side of the centre line and in the {half} half."
    d = direction(*track.vel[0, 0])
    walls = [e.wall for e in track.events_of(0, "wall")]
    if end:
        ev = [
            f"At the start {nm} is {region(*track.pos[0, 0], S)}" + (f" and moves {d}." if d else " and stays still.")
        ]
        if walls:
            ev.append(
                f"It bounces off the {join(list(dict.fromkeys(walls)))} "
                f"wall{'s' if len(set(walls)) > 1 else ''} on the way."
            )
        ev.append(f"In the last frame it is {where}.")
    else:
        ev = [f"In the first frame {nm} is {where}."]
        if d:
            ev.append(f"It moves {d} afterwards, but the question asks about the start.")
    return Candidate(scene, track, view, QA("position", "end" if end else "start", q, ans, distractors, ev, check))


def _event_interval(t: int, idx: np.ndarray) -> int:
    """Index of the first sampled frame that shows a change happening at frame t."""
    return int(np.searchsorted(idx, t, side="left"))


def fam_order(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    n = 2 if rng.random() < 0.4 else 3
    sub = plan["sub"]
    mode = "bounce" if rng.random() < 0.3 else "pass"
    idx8 = sample_indices(T, 8)
    # "slots" in order of appearance; interval j of the 8-frame sampling is (idx8[j-1], idx8[j]]
    start = 0 if (rng.random() < 0.6 and sub != "after") else 1
    jin = sorted(int(j) for j in rng.choice(np.arange(start, 6), n, replace=False))
    taken = set(jin)
    jout: list[int | None] = []
    for j in jin:
        free = [x for x in range(j + 2, 8) if x not in taken]
        if free and rng.random() < 0.3:
            jo = int(free[int(rng.integers(len(free)))])
            taken.add(jo)
            jout.append(jo)
        else:
            jout.append(None)

    def frame_in(j: int) -> int:
        return 0 if j == 0 else int(rng.integers(idx8[j - 1] + 1, idx8[j] + 1))

    t_in = [frame_in(j) for j in jin]
    t_out = [None if j is None else frame_in(j) for j in jout]
    events = [(t, "appear", s) for s, t in enumerate(t_in)] + [
        (t, "disappear", s) for s, t in enumerate(t_out) if t is not None
    ]
    events.sort()
    # which slot becomes object 0 (the answer)
    if sub == "first":
        slot0, x_slot = 0, None
    elif sub == "last":
        slot0, x_slot = n - 1, None
    else:
        cands = [k for k, e in enumerate(events[:-1]) if e[1] == "appear" and e[0] > 0]
        if not cands:
            return None
        k = cands[int(rng.integers(len(cands)))]
        x_slot, slot0 = events[k][2], events[k + 1][2]
    rest = [s for s in range(n) if s != slot0]
    rest = shuffled(rng, rest)
    slot_of = [slot0] + rest  # object k <- slot slot_of[k]
    idents = pick_identities(rng, ctx, [1] * n)
    objs = []
    for k in range(n):
        s = slot_of[k]
        o = make_obj(rng, ctx, idents[k], T, travel=(0.2, 1.0))
        o.t_in, o.t_out = t_in[s], t_out[s]
        objs.append(o)
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    obj_of = {s: k for k, s in enumerate(slot_of)}
    ev_objs = [(t, kind, obj_of[s]) for (t, kind, s) in events]
    for K in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, K)
        iv = [_event_interval(t, idx) for (t, _, _) in ev_objs]
        if any(b <= a for a, b in zip(iv, iv[1:])):
            return None
        for (t, kind, k), j in zip(ev_objs, iv):
            # appear: the first sampled frame that shows the object; disappear: the last one
            tt = int(idx[j]) if kind == "appear" else int(idx[j - 1])
            if view.visible(tt)[k] < 0.5:
                return None
    names = [name(scene, track, k) for k in range(n)]
    at_start = [names[k] for (t, kind, k) in ev_objs if t == 0]
    ev = [f"At the start only {at_start[0]} is visible." if at_start else "The video starts with an empty frame."]
    prev = None
    for t, kind, k in ev_objs:
        if t == 0:
            continue
        verb = "appears" if kind == "appear" else "disappears"
        ev.append(f"{cap(when(rng, t, T, prev))}, {names[k]} {verb}.")
        prev = t
    appear_order = [k for (t, kind, k) in ev_objs if kind == "appear"]
    extra = nonpresent_names(rng, ctx, scene, 4)
    if sub in ("first", "last"):
        if sub == "first":
            q = pick(
                rng,
                (
                    "Which object appears first?",
                    "Which object is the first to appear in the video?",
                    "Which object can be seen first?",
                ),
            )
        else:
            q = pick(
                rng,
                (
                    "Which object appears last?",
                    "Which object is the last to appear in the video?",
                    "Which object shows up last?",
                ),
            )
        ans = names[0]
        distractors = shuffled(rng, names[1:]) + extra
        ev.append(f"So {ans} is the {sub} to appear.")
        other = names[appear_order[1]] if sub == "first" else names[appear_order[-2]]
        if sub == "first":
            check = f"Let me double-check: {ans} is already there in a frame where {other} is not yet visible."
        else:
            check = f"Let me double-check: {other} is already visible in frames where {ans} has not appeared yet."
    else:
        xk = obj_of[x_slot]
        pos = next(i for i, e in enumerate(ev_objs) if e[1] == "appear" and e[2] == xk)

        def describe(kind: str, k: int) -> str:
            return f"{names[k]} {'appears' if kind == 'appear' else 'disappears'}"

        nxt = ev_objs[pos + 1]
        ans = describe(nxt[1], nxt[2])
        q = pick(
            rng,
            (
                f"What happens right after {names[xk]} appears?",
                f"What happens next, after {names[xk]} shows up?",
                f"Which event comes right after {names[xk]} appears?",
            ),
        )
        happened_after = {describe(kind, k) for (_, kind, k) in ev_objs[pos + 1 :]}
        before = [describe(kind, k) for (_, kind, k) in ev_objs[:pos]]
        fake = [f"{names[k]} disappears" for k in range(n)] + [f"{names[k]} changes colour" for k in range(n)]
        fake += [f"{x} appears" for x in extra]
        distractors = [
            d
            for d in shuffled(rng, before) + shuffled(rng, fake)
            if d not in happened_after and d != describe("appear", xk)
        ]
        ev.append(f"Right after {names[xk]} appears, the next thing that happens is that {ans}.")
        check = f"Let me double-check the order: {names[xk]} appears, and the next change in the frames is that {ans}."
    return Candidate(scene, track, view, QA("order", sub, q, ans, distractors, ev, check))


def fam_count(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    sub = plan["sub"]
    n = (
        int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4]))
        if sub == "changes"
        else int(rng.choice([1, 2, 3], p=[0.15, 0.4, 0.45]))
    )
    mode = "bounce" if rng.random() < 0.5 else "pass"
    if sub == "changes":
        r = rng.random()
        trig = None if r < 0.1 else ("collide" if r < 0.35 and n >= 2 and mode == "bounce" else "wall")
        idents = pick_identities(
            rng, ctx, [1 if trig is None else int(rng.integers(2, 4))] + [int(rng.integers(1, 3)) for _ in range(n - 1)]
        )
        objs = [make_obj(rng, ctx, idents[0], T, travel=(0.3, 3.0), trigger=trig)]
    else:
        idents = pick_identities(rng, ctx, [int(rng.integers(1, 3)) for _ in range(n)])
        objs = [make_obj(rng, ctx, idents[0], T, trigger=("wall" if len(idents[0][1]) > 1 else None))]
    for k in range(1, n):
        o = random_other(rng, ctx, idents[k], T, come_and_go=(sub == "changes"))
        if sub != "changes":  # comings and goings make the object counts interesting
            if rng.random() < 0.4:
                o.t_in = int(rng.integers(T // 6, 2 * T // 3))
            if rng.random() < 0.35 and o.t_in + T // 4 < T - 3:
                o.t_out = int(rng.integers(o.t_in + T // 4, T - 2))
        objs.append(o)
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    if sub == "changes":
        runs = track.colour_runs(0)
        ans_n = len(runs) - 1
        if ans_n > 4:
            return None
        for K in VERIFY_NUM_FRAMES:
            idx = sample_indices(T, K)
            for a, b, _ in runs:
                if not any(a <= t <= b and view.visible(int(t))[0] >= 0.4 for t in idx):
                    return None
        the = f"the {scene.objects[0].shape}"
        q = pick(
            rng,
            (
                f"How many times does {the} change colour?",
                f"How often does {the} change its colour?",
                f"How many colour changes does {the} go through?",
            ),
        )
        c0 = runs[0][2]
        ev = [pick(rng, (f"{cap(the)} starts {c0}.", f"At the start {the} is {c0}."))]
        changes = colour_events(track, 0)
        for k, e in enumerate(changes, 1):
            prev = changes[k - 2].t if k > 1 else None
            ev.append(colour_event_sentence(rng, scene, track, e, prev)[:-1] + f" (change {k}).")
        if changes:
            ev.append(
                f"After that it stays {changes[-1].colour}, "
                f"so it changes colour {ans_n} time{'s' if ans_n != 1 else ''}."
            )
            check = (
                "Let me count again: "
                + " -> ".join(c for (_, _, c) in runs)
                + f", that is {ans_n} change{'s' if ans_n != 1 else ''}."
            )
        else:
            ev.append(f"It is {c0} in every frame, so it never changes colour: 0 times.")
            check = (
                f"Let me double-check: the {scene.objects[0].shape} has the same colour "
                "in the first, middle and last frames."
            )
    elif sub == "total":
        ans_n = n
        q = pick(
            rng,
            (
                "How many different objects appear in the video?",
                "How many objects can be seen in total over the whole video?",
                "How many different shapes are shown in the video?",
            ),
        )
        start_objs = [name(scene, track, k, definite=False) for k in range(n) if track.present[0, k]]
        ev = [
            (
                f"At the start there {'is' if len(start_objs) == 1 else 'are'} {join(start_objs)}."
                if start_objs
                else "The video starts empty."
            )
        ]
        for e in track.events:
            if e.kind in ("appear", "disappear"):
                ev.append(
                    f"{cap(when(rng, e.t, T))}, "
                    f"{name(scene, track, e.obj, definite=(e.kind == 'disappear'))} {e.kind}s."
                )
        ev.append(
            f"Altogether {ans_n} different object{'s' if ans_n != 1 else ''} appear: "
            f"{join([name(scene, track, k) for k in range(n)])}."
        )
        check = (
            "Let me double-check: an object that disappears still counts, and no object is counted twice."
            if any(e.kind == "disappear" for e in track.events)
            else f"Let me double-check: I see {ans_n} distinct shapes across the frames."
        )
    else:  # objects visible at the end
        if not track.present[T - 1, 0]:
            return None
        at_end = [k for k in range(n) if track.present[T - 1, k]]
        if any(view.visible(T - 1)[k] < 0.6 for k in at_end):
            return None
        for K in VERIFY_NUM_FRAMES:
            prev = int(sample_indices(T, K)[-2])
            if [k for k in range(n) if track.present[prev, k]] != at_end:
                return None
        ans_n = len(at_end)
        q = pick(
            rng,
            (
                "How many objects are visible at the end of the video?",
                "How many objects are left in the last frame?",
                "How many shapes can be seen when the video ends?",
            ),
        )
        ev = [f"In the last frame I can see {join([name(scene, track, k) for k in at_end])}."]
        gone = [e for e in track.events if e.kind == "disappear"]
        for e in gone:
            ev.append(f"{cap(name(scene, track, e.obj))} disappeared {when(rng, e.t, T)}.")
        ev.append(f"So {ans_n} object{'s are' if ans_n != 1 else ' is'} visible at the end.")
        check = f"Let me double-check the last frame: {ans_n} shape{'s' if ans_n != 1 else ''}, no more."
    ans = str(ans_n)
    distractors = [str(c) for c in count_window(rng, ans_n) if c != ans_n]
    return Candidate(scene, track, view, QA("count", sub, q, ans, distractors, ev, check))


def count_window(rng: np.random.Generator, ans_n: int, k: int = 5) -> list[int]:
    """`k` consecutive counts containing `ans_n`, starting at a random feasible offset.

    The nearest numbers around the answer (the old rule) put it in the middle of the option values
    whenever it is >= 2, so "pick the median number" answered most count questions without the
    video. A random window makes the answer's rank among the options uninformative (except for 0,
    which can only be the smallest).
    """
    start = ans_n - int(rng.integers(0, min(ans_n, k - 1) + 1))
    return list(range(start, start + k))


def _gap_boxes(track: Track, scene: Scene, t: int, i: int, j: int) -> float:
    """Gap (px) between the bounding boxes of objects i and j at frame t (<= 0: touching)."""
    d = np.abs(track.pos[t, i] - track.pos[t, j])
    lim = (scene.objects[i].size + scene.objects[j].size) / 2.0
    return float(max(d[0] - lim, d[1] - lim))


def _gap_wall(track: Track, scene: Scene, t: int, i: int, wall: str | None = None) -> float:
    x, y = track.pos[t, i]
    h, S = scene.objects[i].size / 2.0, scene.frame_size
    gaps = {"left": x - h, "right": S - (x + h), "top": y - h, "bottom": S - (y + h)}
    return gaps[wall] if wall else min(gaps.values())


def fam_cause(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S, u = ctx.frame_size, ctx.u
    fps, T = pick_clip(rng)
    sub, kind = plan["sub"], plan["kind"]
    idx8 = sample_indices(T, 8)
    tc = int(idx8[int(rng.integers(3, 6))])  # the event happens exactly in a sampled frame
    axis = int(rng.integers(2))
    sgn = 1.0 if rng.random() < 0.5 else -1.0
    n = 2 if kind == "collide" else int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3]))
    if kind == "collide" and rng.random() < 0.35:
        n = 3
    mode = "bounce" if kind == "collide" else ("bounce" if rng.random() < 0.5 else "pass")
    trig = ("collide" if kind == "collide" else "wall") if sub == "colour" else None
    idents = pick_identities(rng, ctx, [2 if trig else 1] + [int(rng.integers(1, 3)) for _ in range(n - 1)])
    subj = make_obj(rng, ctx, idents[0], T, trigger=trig)
    h0 = subj.size / 2.0
    objs = [subj]
    if kind == "wall":
        D0 = float(rng.uniform(0.2, 0.4)) * S
        v0 = D0 / tc
        edge = S - h0 + 0.5 * v0 if sgn > 0 else h0 - 0.5 * v0  # centre at tc: just past the wall
        a0 = edge - sgn * v0 * tc
        perp = float(rng.uniform(h0 + 1, S - h0 - 1))
        partner_i = None
    else:
        partner = make_obj(rng, ctx, idents[1], T, trigger=("collide" if len(idents[1][1]) > 1 else None))
        h1 = partner.size / 2.0
        still_partner = sub == "colour" and rng.random() < 0.25
        D0 = float(rng.uniform(0.15, 0.3)) * S
        v0 = D0 / tc
        v1 = 0.0 if still_partner else v0 * float(rng.uniform(0.4, 1.0))
        ov = 0.5 * (v0 + v1)  # overlap at tc: they touch in frame tc, not in tc - 1
        # in the direction of the subject's motion: both start inside the frame, no wall first
        lo = h0 + 1 + (h0 - ov / 2) + D0
        hi = S - h1 - 1 - (h1 - ov / 2) - v1 * tc
        if hi < lo:
            return None
        m = float(rng.uniform(lo, hi))  # contact point
        a0, a1 = m - (h0 - ov / 2) - D0, m + (h1 - ov / 2) + v1 * tc
        if sgn < 0:
            a0, a1 = S - a0, S - a1
        hmax = max(h0, h1)
        perp = float(rng.uniform(hmax + 2, S - hmax - 2))
        off = float(rng.uniform(-0.2, 0.2)) * min(h0, h1)
        pv = [0.0, 0.0]
        pv[axis] = -sgn * v1
        pp = [0.0, 0.0]
        pp[axis], pp[1 - axis] = a1, perp + off
        partner.x, partner.y, partner.vx, partner.vy = pp[0], pp[1], pv[0], pv[1]
        objs.append(partner)
        partner_i = 1
    if not (h0 + 1 <= a0 <= S - h0 - 1):
        return None
    sp, sv = [0.0, 0.0], [0.0, 0.0]
    sp[axis], sp[1 - axis], sv[axis] = a0, perp, sgn * v0
    subj.x, subj.y, subj.vx, subj.vy = sp[0], sp[1], sv[0], sv[1]
    objs += [random_other(rng, ctx, idents[k], T, come_and_go=False) for k in range(len(objs), n)]
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    if sub == "colour":
        evs = colour_events(track, 0)
    else:
        evs = track.events_of(0, "wall", "collide")
    if len(evs) != 1:
        return None
    e = evs[0]
    te = e.t
    cause = e.cause if sub == "colour" else e.kind
    if cause == "collide":
        other = e.other if e.obj == 0 else e.obj
    else:
        other = None
    if cause != kind or te != tc or (other is not None and other != partner_i):
        return None
    # the cause is visible: contact in a sampled frame, no other possible cause nearby
    if cause == "collide":
        if _gap_boxes(track, scene, te, 0, other) > 1.0 * u or _gap_wall(track, scene, te, 0) < 3 * u:
            return None
    else:
        if _gap_wall(track, scene, te, 0, e.wall) > 1.0 * u:
            return None
        if any(track.present[te, k] and _gap_boxes(track, scene, te, 0, k) < 6 * u for k in range(1, n)):
            return None
    for K in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, K)
        near = int(idx[np.argmin(np.abs(idx - te))])
        gap = (
            _gap_boxes(track, scene, near, 0, other) if cause == "collide" else _gap_wall(track, scene, near, 0, e.wall)
        )
        if gap > 0.12 * S:
            return None
        j = _event_interval(te, idx)
        if j == 0 or j >= K - 1:
            return None
        if view.visible(int(idx[j - 1]))[0] < 0.6 or view.visible(int(idx[j]))[0] < 0.6:
            return None
    # the subject and (if any) its partner are there for the whole clip
    if not track.present[:, 0].all() or (other is not None and not track.present[:, other].all()):
        return None
    shape = scene.objects[0].shape
    nm = f"the {shape}" if sub == "colour" else name(scene, track, 0)
    walls = [w for w in WALLS if w != e.wall]
    present_others = [k for k in range(1, n) if k != other]
    extra = nonpresent_names(rng, ctx, scene, 3)
    d0 = direction(*track.vel[0, 0])
    d1 = direction(*track.vel[te, 0])
    stops = d1 is None
    if sub == "colour":
        q = pick(
            rng,
            (
                f"Why does {nm} change colour?",
                f"What makes {nm} change its colour?",
                f"Why does the {e.prev} {shape} turn {e.colour}?",
            ),
        )
        if cause == "wall":
            ans = f"because it hits the {e.wall} wall"
            distractors = [
                f"because it collides with {name(scene, track, k)}" for k in shuffled(rng, list(range(1, n)))
            ]
            distractors += [f"because it hits the {w} wall" for w in shuffled(rng, walls)[:2]]
        else:
            ans = f"because it collides with {name(scene, track, other)}"
            distractors = [f"because it collides with {name(scene, track, k)}" for k in present_others]
            distractors += [f"because it hits the {w} wall" for w in shuffled(rng, list(WALLS))[:2]]
        distractors += [f"because it collides with {x}" for x in extra[:2]]
        if not stops:
            distractors.append("because it stops moving")
        distractors.append(f"because {extra[2]} appears")
    else:
        q = pick(
            rng,
            (
                f"Why does {nm} change direction?",
                f"What makes {nm} turn around?",
                f"Why does {nm} reverse its direction {when(rng, te, T)}?",
            ),
        )
        if cause == "wall":
            ans = f"because it bounces off the {e.wall} wall"
            distractors = [
                f"because it collides with {name(scene, track, k)}" for k in shuffled(rng, list(range(1, n)))
            ]
            distractors += [f"because it bounces off the {w} wall" for w in shuffled(rng, walls)[:2]]
        else:
            ans = f"because it collides with {name(scene, track, other)}"
            distractors = [f"because it collides with {name(scene, track, k)}" for k in present_others]
            distractors += [f"because it bounces off the {w} wall" for w in shuffled(rng, list(WALLS))[:2]]
        distractors += [f"because it collides with {x}" for x in extra[:2]]
        distractors += ["because it changes colour", f"because {extra[2]} appears"]
    w = when(rng, te, T)
    if cause == "wall":
        first = (
            f"At the start {nm} "
            + (f"is {e.prev} and " if sub == "colour" else "")
            + f"moves {d0}, towards the {e.wall} wall."
        )
        hit = f"{cap(w)} it reaches the {e.wall} wall and bounces back" + (
            f"; in that same frame it turns {e.colour}." if sub == "colour" else "."
        )
        ev = [first, hit, "No other object is close to it at that moment."]
        why = f"it hits the {e.wall} wall" if sub == "colour" else f"it bounces off the {e.wall} wall"
        check = f"Let me double-check: the change happens exactly when it touches the {e.wall} wall, not before."
    else:
        pn = name(scene, track, other)
        pmove = direction(*track.vel[0, other])
        first = f"At the start {nm} " + (f"is {e.prev} and " if sub == "colour" else "") + f"moves {d0}, towards {pn}"
        first += f", which {'moves ' + pmove if pmove else 'stands still'}."
        after = "stops" if stops else f"moves {d1}"
        hit = f"{cap(w)} the two touch: {nm} " + (
            f"turns {e.colour} in that frame and then {after}." if sub == "colour" else f"bounces back and {after}."
        )
        ev = [first, hit, "At that moment it is not near any wall, so a wall is not the reason."]
        why = f"it collides with {pn}"
        check = f"Let me double-check: the change happens in the frame where it touches {pn}, away from the walls."
    ev.append(f"So the {'colour' if sub == 'colour' else 'direction'} changes because {why}.")
    return Candidate(scene, track, view, QA("cause", f"{sub}_{cause}", q, ans, distractors, ev, check))


def path_length(track: Track, i: int, idx: np.ndarray) -> float:
    p = track.pos[idx, i]
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def fam_compare(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    n = 2 if rng.random() < 0.6 else 3
    sub = plan["sub"]
    idents = pick_identities(rng, ctx, [1] * n)
    if sub == "fastest":
        tr0 = float(rng.uniform(1.2, 3.0))
        travels = [tr0] + [float(rng.uniform(0.1, tr0 / 2.5)) for _ in range(n - 1)]
    elif sub == "slowest":
        tr0 = float(rng.uniform(0.15, 0.5))
        travels = [tr0] + [float(rng.uniform(tr0 * 2.5, 3.0)) for _ in range(n - 1)]
    else:
        travels = [0.0] + [float(rng.uniform(0.5, 2.5)) for _ in range(n - 1)]
    objs = [make_obj(rng, ctx, idents[k], T, travel=(travels[k], travels[k])) for k in range(n)]
    scene = Scene(S, fps, T, objs, "pass")
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    for K in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, K)
        L = [path_length(track, k, idx) for k in range(n)]
        if sub == "fastest" and L[0] < 1.6 * max(L[1:]):
            return None
        if sub == "slowest" and min(L[1:]) < 1.6 * L[0]:
            return None
        if sub == "still" and min(L[1:]) < 0.3 * S:
            return None
        for k in range(n):
            if sum(view.visible(int(t))[k] >= 0.4 for t in idx) < 0.75 * K:
                return None
    names = [name(scene, track, k) for k in range(n)]
    two = n == 2
    if sub == "fastest":
        q = pick(
            rng,
            (
                ("Which object moves faster?", "Which of the two objects is faster?")
                if two
                else ("Which object moves the fastest?", "Which object covers the most distance?")
            ),
        )
    elif sub == "slowest":
        q = pick(
            rng,
            (
                ("Which object moves more slowly?", "Which of the two objects is slower?")
                if two
                else ("Which object moves the slowest?", "Which object covers the least distance?")
            ),
        )
    else:
        q = pick(rng, ("Which object stays still?", "Which object does not move at all?"))
    same = "both move at the same speed" if two else "they all move at the same speed"
    distractors = (
        shuffled(rng, names[1:]) + ["none of them" if sub == "still" else same] + nonpresent_names(rng, ctx, scene, 3)
    )
    L = [path_length(track, k, sample_indices(T, 8)) for k in range(n)]
    ev = []
    for k in range(n):
        d = direction(*track.vel[0, k])
        if d is None:
            ev.append(f"{cap(names[k])} stays at the same spot, {region(*track.pos[0, k], S)}, in every frame.")
            continue
        frac = L[k] / S
        how = (
            "crosses the frame several times"
            if frac > 1.6
            else (
                "travels a long way across the frame"
                if frac > 0.7
                else ("moves a fair distance" if frac > 0.35 else "only moves a short distance")
            )
        )
        bounce = ", bouncing off the walls" if track.events_of(k, "wall") else ""
        ev.append(f"{cap(names[k])} starts moving {d} and {how}{bounce}.")
    if sub == "fastest":
        ev.append(f"So {names[0]} moves {'faster' if two else 'the fastest'}.")
        slow = names[int(np.argmax(L[1:])) + 1]
        check = f"Let me double-check: over the same frames {names[0]} covers much more ground than {slow}."
    elif sub == "slowest":
        ev.append(f"So {names[0]} moves {'more slowly' if two else 'the slowest'}.")
        fast = names[int(np.argmin(L[1:])) + 1]
        check = f"Let me double-check: over the same frames {fast} covers much more ground than {names[0]}."
    else:
        ev.append(f"So {names[0]} is the one that stays still.")
        check = f"Let me double-check: {names[0]} is at the same place in the first and the last frame."
    return Candidate(scene, track, view, QA("compare", sub, q, names[0], distractors, ev, check))


def fam_change(rng: np.random.Generator, ctx: Ctx, plan: dict) -> Candidate | None:
    S = ctx.frame_size
    fps, T = pick_clip(rng)
    n = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    mode = "bounce" if rng.random() < 0.5 else "pass"
    trig = None if not plan["turns"] else ("collide" if rng.random() < 0.3 and n >= 2 and mode == "bounce" else "wall")
    idents = pick_identities(
        rng, ctx, [1 if trig is None else int(rng.integers(2, 4))] + [int(rng.integers(1, 3)) for _ in range(n - 1)]
    )
    objs = [make_obj(rng, ctx, idents[0], T, travel=(0.6, 2.0), trigger=trig)]
    objs += [random_other(rng, ctx, idents[k], T) for k in range(1, n)]
    objs[0].t_in, objs[0].t_out = 0, None
    scene = Scene(S, fps, T, objs, mode)
    done = finish(scene)
    if done is None:
        return None
    track, view = done
    if not (isolated(scene, track, view, 0, 0, 2 * ctx.u) and isolated(scene, track, view, T - 1, 0, 2 * ctx.u)):
        return None
    for K in VERIFY_NUM_FRAMES:
        idx = sample_indices(T, K)
        if not (sampled_colour_ok(track, 0, 0, int(idx[1])) and sampled_colour_ok(track, 0, T - 1, int(idx[-2]))):
            return None
    runs = track.colour_runs(0)
    c0, ce = runs[0][2], runs[-1][2]
    if (len(runs) > 1) != plan["turns"] or (len(runs) > 1 and c0 == ce):
        return None
    shape = scene.objects[0].shape
    the = f"the {shape}"
    q = pick(
        rng,
        (
            f"How does {the} change between the start and the end of the video?",
            f"How is {the} different at the end compared to the start?",
            f"What happens to the colour of {the} from the beginning to the end?",
        ),
    )
    mids = [c for (_, _, c) in runs[1:-1] if c not in (c0, ce)]
    scene_cols = [c for o in scene.objects[1:] for c in o.colours]
    pool = list(dict.fromkeys(mids + shuffled(rng, scene_cols) + shuffled(rng, list(COLOURS))))
    pool = [c for c in pool if c not in (c0, ce) and colour_ok(ctx, c, shape)]
    stay = "it stays {} the whole time"
    if len(runs) == 1:
        ans = stay.format(c0)
        distractors = [
            f"it turns from {c0} to {pool[0]}",
            f"it turns from {pool[1]} to {c0}",
            stay.format(pool[0]),
            f"it turns from {c0} to {pool[2]}",
            stay.format(pool[3]),
        ]
    else:
        ans = f"it turns from {c0} to {ce}"
        distractors = [
            f"it turns from {ce} to {c0}",
            f"it turns from {c0} to {pool[0]}",
            stay.format(c0),
            f"it turns from {pool[1]} to {ce}",
            stay.format(ce),
        ]
    ev = [pick(rng, (f"In the first frame {the} is {c0}.", f"At the start {the} is {c0}."))]
    changes = colour_events(track, 0)
    ev += [colour_event_sentence(rng, scene, track, e, p.t if p else None) for p, e in zip([None] + changes, changes)]
    ev.append(f"In the last frame it is {ce}.")
    if len(runs) == 1:
        ev.append(f"Its colour never changes, so it stays {c0} the whole time.")
        check = f"Let me double-check: the first and the last frames both show {combo_name(c0, shape, definite=False)}."
    else:
        ev.append(f"So it turns from {c0} to {ce}.")
        if mids or len(runs) > 2:
            mid = runs[1][2]
            check = (
                f"Wait, it is {mid} for a while in the middle, but the question compares the start and the end: "
                f"{c0} at the start, {ce} at the end."
            )
        else:
            check = f"Let me double-check the first and the last frames: {c0} first, {ce} last."
    return Candidate(scene, track, view, QA("change", "colour", q, ans, distractors, ev, check))


FAMILY_BUILDERS = {
    "color": fam_color,
    "direction": fam_direction,
    "position": fam_position,
    "order": fam_order,
    "count": fam_count,
    "cause": fam_cause,
    "compare": fam_compare,
    "change": fam_change,
}
MAX_ATTEMPTS = 2000


def draw_plan(rng: np.random.Generator, family: str) -> dict:
    """The item's question type, drawn once so that rejections do not skew the mix of types."""
    if family == "color":
        return {"end": rng.random() < 0.7}
    if family == "direction":
        return {"still": rng.random() < 0.1}
    if family == "position":
        return {"end": rng.random() < 0.7, "centre": rng.random() < 0.15}
    if family == "order":
        return {"sub": pick(rng, ("first", "first", "last", "after", "after"))}
    if family == "count":
        return {"sub": pick(rng, ("changes", "changes", "changes", "total", "end"))}
    if family == "cause":
        return {"sub": pick(rng, ("colour", "direction")), "kind": pick(rng, ("wall", "collide"))}
    if family == "compare":
        return {"sub": pick(rng, ("fastest", "fastest", "fastest", "slowest", "slowest", "still"))}
    if family == "change":
        return {"turns": rng.random() < 0.7}
    raise KeyError(family)


def build_candidate(rng: np.random.Generator, family: str, ctx: Ctx) -> tuple[Candidate, int]:
    """Draw scenes from `rng` until one passes the family's checks; returns it and the attempts."""
    builder = FAMILY_BUILDERS[family]
    plan = draw_plan(rng, family)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        cand = builder(rng, ctx, plan)
        if cand is not None:
            return cand, attempt
    raise RuntimeError(f"synthetic family {family!r}: no valid scene in {MAX_ATTEMPTS} attempts")  # pragma: no cover
