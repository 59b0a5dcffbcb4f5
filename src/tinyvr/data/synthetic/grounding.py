"""Grounded questions: short look-ups into one clip, straight from the scene's ground truth.

Each question names one object by its shape (shapes are unique within a scene) and asks its colour
or its place (one of nine regions) at the first or the last frame a model samples; with `motion`,
also which way it went between those two frames (the direction family's answers), the first
perception step that needs two frames compared; with `compare`, which of the clip's objects appears
first and which moves farther over the sampled frames (`compare_questions`), the order and compare
families' look-ups, whose answer is an object. They are the
perception steps the QA families build on ("What colour is the circle at the start?"), many per
clip, so a from-scratch model gets several supervised look-ups per clip instead of one letter
(docs/tiny-study.md, item 18). Only objects at least `min_visible` visible in that frame are asked
about, so every answer can be read off the frame. `with_options` turns them into multiple choice
in the dataset's option format, so the same look-ups also train reading the answer's letter.
"""

from __future__ import annotations

import random

import numpy as np

from tinyvr.data.synthetic.questions import DIRECTION_OPTIONS, Candidate, path_length
from tinyvr.data.synthetic.scene import COLOURS, SHAPES, sample_indices
from tinyvr.data.synthetic.text import region
from tinyvr.data.synthetic.writer import LETTERS, NUM_OPTIONS, format_problem
from tinyvr.data.template import OPTION_SUFFIX, REASON_SUFFIX, checked_thinking, reasoned_answer

KINDS = ("colour_start", "where_start", "colour_end", "where_end")
MOTION_KIND = "move"
FIRST_KIND, FARTHER_KIND = "first", "farther"
OBJECT_KINDS = (FIRST_KIND, FARTHER_KIND)  # kinds whose answer is one of the clip's objects
# the fifth option of an object question: four shapes at most, and the question is asked only when
# one object is clearly first or farthest, so "at the same time" / "the same distance" is always wrong
SAME = {FIRST_KIND: "they appear at the same time", FARTHER_KIND: "they move the same distance"}
FARTHER = 1.6  # the farthest object's path over the sampled frames, at least this times every other one's
REGIONS = tuple(region(x, y, 3) for y in (0.5, 1.5, 2.5) for x in (0.5, 1.5, 2.5))
STILL, MOVED, DOMINANT = 0.05, 0.15, 2.0  # net motion, in frame sizes: below STILL it stays in place


def visible_objects(cand: Candidate, frame: int, min_visible: float = 0.6):
    """(object index, shape, colour, region) of every object at least `min_visible` visible in the
    scene's `frame`: what can be read off that frame."""
    sc, tr = cand.scene, cand.track
    vis = cand.view.visible(frame)
    for i, obj in enumerate(sc.objects):
        if tr.present[frame, i] and vis[i] >= min_visible:
            x, y = tr.pos[frame, i]
            yield i, obj.shape, tr.colour[frame][i], region(float(x), float(y), sc.frame_size)


def grounded_questions(cand: Candidate, num_frames: int = 8, min_visible: float = 0.6,
                       motion: bool = False, compare: bool = False) -> list[tuple[str, str, str]]:
    """[(kind, question, answer)] for every well visible object at the first and the last of the
    `num_frames` uniformly sampled frames; kinds as in KINDS, and with `motion` the questions of
    `motion_questions` after them, with `compare` those of `compare_questions` last."""
    ids = sample_indices(cand.scene.num_frames, num_frames)
    out = []
    for when, t in (("start", int(ids[0])), ("end", int(ids[-1]))):
        for _, shape, colour, place in visible_objects(cand, t, min_visible):
            out.append((f"colour_{when}", f"What colour is the {shape} at the {when}?", colour))
            out.append((f"where_{when}", f"Where is the {shape} at the {when}?", place))
    return (out + (motion_questions(cand, num_frames, min_visible) if motion else [])
            + (compare_questions(cand, num_frames, min_visible) if compare else []))


def motion_questions(cand: Candidate, num_frames: int = 8, min_visible: float = 0.6) -> list[tuple[str, str, str]]:
    """[(MOTION_KIND, question, answer)] for every object well visible at the first and the last
    sampled frame whose net motion between them is clear: less than STILL frame sizes ("it stays in
    place"), or at least MOVED along one axis and DOMINANT times the other (left, right, up, down).
    Objects in between are not asked about: their answer would be a judgement call."""
    ids = sample_indices(cand.scene.num_frames, num_frames)
    t0, t1 = int(ids[0]), int(ids[-1])
    at_end = {i for i, *_ in visible_objects(cand, t1, min_visible)}
    size = cand.scene.frame_size
    out = []
    for i, shape, _, _ in visible_objects(cand, t0, min_visible):
        if i not in at_end:
            continue
        dx, dy = (float(v) / size for v in cand.track.pos[t1, i] - cand.track.pos[t0, i])
        if max(abs(dx), abs(dy)) < STILL:
            answer = "it stays in place"
        elif abs(dx) >= MOVED and abs(dx) >= DOMINANT * abs(dy):
            answer = "to the right" if dx > 0 else "to the left"
        elif abs(dy) >= MOVED and abs(dy) >= DOMINANT * abs(dx):
            answer = "downward" if dy > 0 else "upward"
        else:
            continue
        out.append((MOTION_KIND, f"Which way does the {shape} move from the start to the end?", answer))
    return out


def _either(shapes: list[str]) -> str:
    names = [f"the {s}" for s in sorted(shapes, key=SHAPES.index)]  # a fixed order: it tells nothing
    return " or ".join(names) if len(names) == 2 else ", ".join(names[:-1]) + " or " + names[-1]


def compare_questions(cand: Candidate, num_frames: int = 8, min_visible: float = 0.6) -> list[tuple[str, str, str]]:
    """[(kind, question, answer "the <shape>")], the question naming the objects it compares:
    FIRST_KIND, asked when one object is well visible in a sampled frame before any other object is
    seen at all (even 10% of it), about every object well visible in some sampled frame;
    FARTHER_KIND, about the objects well visible in at least 3/4 of the sampled frames, asked when
    one's path through the sampled frames is at least FARTHER times every other one's and at least
    a third of the frame. Clips without a clear answer get no question."""
    sc, tr, view = cand.scene, cand.track, cand.view
    ids = [int(t) for t in sample_indices(sc.num_frames, num_frames)]
    vis = np.array([view.visible(t) * tr.present[t] for t in ids])  # (sampled frame, object)
    shapes = [o.shape for o in sc.objects]
    out = []
    seen = [i for i in range(len(shapes)) if (vis[:, i] >= min_visible).any()]
    if len(seen) >= 2:
        first = {i: int(np.argmax(vis[:, i] >= min_visible)) for i in seen}
        a = min(seen, key=first.get)
        if all(not (vis[:first[a] + 1, b] >= 0.1).any() for b in range(len(shapes)) if b != a):
            out.append((FIRST_KIND, f"Which appears first: {_either([shapes[i] for i in seen])}?", f"the {shapes[a]}"))
    steady = [i for i in range(len(shapes)) if (vis[:, i] >= min_visible).sum() >= 0.75 * len(ids)]
    if len(steady) >= 2:
        path = {i: path_length(tr, i, ids) for i in steady}  # as the compare family measures it
        a = max(steady, key=path.get)
        if path[a] >= sc.frame_size / 3 and all(path[a] >= FARTHER * path[b] for b in steady if b != a):
            out.append((FARTHER_KIND, f"Which moves farther: {_either([shapes[i] for i in steady])}?",
                        f"the {shapes[a]}"))
    return out


def object_facts(cand: Candidate, num_frames: int = 8, min_visible: float = 0.6) -> list[tuple[int, int, int, int]]:
    """(sampled frame, shape index, region index, colour index) of every well visible object in each
    of the `num_frames` sampled frames: the targets of the align part's object head."""
    return [(k, SHAPES.index(shape), REGIONS.index(place), COLOURS.index(colour))
            for k, t in enumerate(sample_indices(cand.scene.num_frames, num_frames))
            for _, shape, colour, place in visible_objects(cand, int(t), min_visible)]


def grounded_conversation(questions: list[tuple[str, str, str]]) -> list[dict]:
    """A LLaVA multi-turn conversation: the video once, then one turn per question."""
    conv = []
    for j, (_, q, a) in enumerate(questions):
        conv += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + q}, {"from": "gpt", "value": a}]
    return conv


def with_options(questions: list[tuple[str, str, str]], rng: random.Random,
                 reason: bool = False) -> list[tuple[str, str, str]]:
    """The same questions as multiple choice: (kind, question + options + the option instruction,
    answer letter). Distractors are the answers of the clip's other questions of the same kind
    first (the other objects' colours or places, so naming any colour seen is not enough), then
    other colours or regions; an object question (OBJECT_KINDS) offers every other shape and its SAME
    option, so the objects it names are always among them. The answer's letter is uniform. `reason`:
    asked with the reasoning instruction, answered as the cold start answers: the answer stated, the
    option check, the letter (`reasoned_answer`)."""
    out = []
    for kind, q, a in questions:
        if kind in OBJECT_KINDS:  # the named objects, SAME and the absent shapes: always all four
            seen, rest = [], [SAME[kind]] + [f"the {s}" for s in SHAPES if f"the {s}" != a]
            rng.shuffle(rest)
        else:
            seen = [x for k, _, x in questions if k == kind and x != a]
            vocab = COLOURS if kind.startswith("colour") else DIRECTION_OPTIONS if kind == MOTION_KIND else REGIONS
            rest = [x for x in vocab if x != a and x not in seen]
            rng.shuffle(seen)
            rng.shuffle(rest)
        wrong = list(dict.fromkeys(seen + rest))[:NUM_OPTIONS - 1]
        k = rng.randrange(NUM_OPTIONS)
        options = wrong[:k] + [a] + wrong[k:]
        if reason:
            out.append((kind, f"{format_problem(q, options)}\n{REASON_SUFFIX}",
                        reasoned_answer(checked_thinking(options, k), LETTERS[k])))
        else:
            out.append((kind, f"{format_problem(q, options)}\n{OPTION_SUFFIX}", LETTERS[k]))
    return out
