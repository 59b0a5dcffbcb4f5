"""Captions of synthetic clips (pretraining targets), written from the simulated ground truth."""

from __future__ import annotations

import numpy as np

from .render import SceneView
from .scene import Scene, Track
from .text import cap, constant_colour, direction, join, name, pick, region, when

PRETRAIN_PROMPTS: tuple[str, ...] = (
    "Describe the video.",
    "What happens in this video?",
    "Describe what you see in the video.",
    "Give a short description of the clip.",
    "Summarize the events in the video.",
)

MAX_EVENT_SENTENCES = 6


def _speed_word(track: Track, scene: Scene, i: int) -> str:
    speed = float(np.hypot(*track.vel[0, i]))
    travel = speed * (scene.num_frames - 1) / scene.frame_size
    return " slowly" if travel < 0.5 else (" quickly" if travel > 2.0 else "")


def _occlusions(scene: Scene, track: Track, view: SceneView) -> list[tuple[int, int, int]]:
    """(frame, hidden object, occluder) where an object starts being mostly hidden (pass mode)."""
    if scene.mode != "pass":
        return []
    out, hidden = [], set()
    n = len(scene.objects)
    for t in range(scene.num_frames):
        vis = view.visible(t)
        for i in range(n):
            if not track.present[t, i]:
                hidden.discard(i)
                continue
            if vis[i] < 0.5:
                if i not in hidden:
                    lab = view.labels(t)
                    x, y = track.pos[t, i]
                    r, c = int(min(max(y, 0), scene.frame_size - 1)), int(min(max(x, 0), scene.frame_size - 1))
                    j = int(lab[r, c])
                    if j >= 0 and j != i:
                        out.append((t, i, j))
                    hidden.add(i)
            elif vis[i] > 0.9:
                hidden.discard(i)
    return out


def caption(rng: np.random.Generator, scene: Scene, track: Track, view: SceneView) -> str:
    S, T, n = scene.frame_size, scene.num_frames, len(scene.objects)
    mentioned: set[int] = set()

    def ref(i: int) -> str:
        if i in mentioned:
            return name(scene, track, i)
        mentioned.add(i)
        o = scene.objects[i]
        return f"{'an' if o.colours[0][0] in 'aeiou' else 'a'} {o.colours[0]} {o.shape}"

    out: list[str] = []
    start = [i for i in range(n) if track.present[0, i]]
    if start:
        first = join([ref(i) for i in start])
        verb = "is" if len(start) == 1 else "are"
        out.append(
            pick(
                rng,
                (
                    f"{cap(first)} {verb} on a dark background.",
                    f"The video shows {first} on a black background.",
                    f"On a dark background there {verb} {first}.",
                ),
            )
        )
        for i in start:
            d = direction(*track.vel[0, i])
            out.append(
                f"{cap(name(scene, track, i))} moves{_speed_word(track, scene, i)} {d}."
                if d
                else f"{cap(name(scene, track, i))} stays still."
            )
    else:
        out.append("The video starts with an empty dark frame.")

    items = []  # (frame, priority, objects involved, sentence maker taking the previous frame told)
    colour_at = {(e.t, e.obj): e.colour for e in track.events if e.kind == "colour"}
    recoloured = {e.obj for e in track.events if e.kind == "colour"}
    walls_said: dict[int, int] = {}

    def w(t: int, prev: int | None) -> str:
        return cap(when(rng, t, T, prev))

    for e in track.events:
        if e.kind == "appear":
            d = direction(*track.vel[e.t, e.obj])
            where = region(*track.pos[e.t, e.obj], S)
            first = ref(e.obj)
            tail = f" and moves {d}." if d else " and stays still."
            items.append(
                (
                    e.t,
                    -1,
                    (e.obj,),
                    lambda p, e=e, first=first, where=where, tail=tail: f"{w(e.t, p)}, {first} appears {where}{tail}",
                )
            )
        elif e.kind == "disappear":
            items.append((e.t, 0, (e.obj,), lambda p, e=e: f"{w(e.t, p)}, {name(scene, track, e.obj)} disappears."))
        elif e.kind == "wall":
            c = colour_at.get((e.t, e.obj))
            if c is None and walls_said.get(e.obj, 0) >= 1:
                continue
            walls_said[e.obj] = walls_said.get(e.obj, 0) + 1
            turn = f" and turns {c}." if c else "."
            items.append(
                (
                    e.t,
                    1 if c else 2,
                    (e.obj,),
                    lambda p, e=e, turn=turn: (
                        f"{w(e.t, p)}, {name(scene, track, e.obj)} bounces off the {e.wall} wall{turn}"
                    ),
                )
            )
        elif e.kind == "collide":
            a, b = e.obj, e.other
            turns = [
                f"{name(scene, track, k)} turns {c}"
                for k, c in ((a, colour_at.get((e.t, a))), (b, colour_at.get((e.t, b))))
                if c
            ]
            tail = ("; " + " and ".join(turns) + ".") if turns else "."
            items.append(
                (
                    e.t,
                    0,
                    (a, b),
                    lambda p, e=e, tail=tail: (
                        f"{w(e.t, p)}, {name(scene, track, e.obj)} and {name(scene, track, e.other)} "
                        f"collide and bounce apart{tail}"
                    ),
                )
            )
    for t, i, j in _occlusions(scene, track, view):
        items.append(
            (
                t,
                1,
                (i, j),
                lambda p, t=t, i=i, j=j: f"{w(t, p)}, {name(scene, track, i)} passes behind {name(scene, track, j)}.",
            )
        )
    # keep the most telling events (appearances first, then collisions, colour changes; object 0 first)
    items.sort(key=lambda it: (it[1], 0 not in it[2], it[0]))
    keep, dropped = items[:MAX_EVENT_SENTENCES], items[MAX_EVENT_SENTENCES:]
    keep.sort(key=lambda it: it[0])
    prev = None
    for t, _, _, make in keep:
        out.append(make(prev))
        prev = t
    # an object whose colour changes were not all told gets no colour in the final sentence
    untold = {k for (_, _, objs, _) in dropped for k in objs if k in recoloured}

    end = [i for i in range(n) if track.present[T - 1, i]]
    descr = []
    for i in end[:2]:
        where = region(*track.pos[T - 1, i], S)
        if constant_colour(track, i) is None and i not in untold:
            descr.append(f"{name(scene, track, i)} is {track.colour[T - 1][i]} and {where}")
        else:
            descr.append(f"{name(scene, track, i)} is {where}")
    if descr:
        out.append(pick(rng, ("At the end, ", "In the last frame, ", "When the video ends, ")) + join(descr) + ".")
    else:
        out.append("At the end the frame is empty.")
    return " ".join(out)
