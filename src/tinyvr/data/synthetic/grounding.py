"""Grounded questions: short look-ups into one clip, straight from the scene's ground truth.

Each question names one object by its shape (shapes are unique within a scene) and asks its colour
or its place (one of nine regions) at the first or the last frame a model samples. They are the
perception steps the QA families build on ("What colour is the circle at the start?"), many per
clip, so a from-scratch model gets several supervised look-ups per clip instead of one letter
(docs/tiny-study.md, item 18). Only objects at least `min_visible` visible in that frame are asked
about, so every answer can be read off the frame.
"""

from __future__ import annotations

from tinyvr.data.synthetic.questions import Candidate
from tinyvr.data.synthetic.scene import sample_indices
from tinyvr.data.synthetic.text import region

KINDS = ("colour_start", "where_start", "colour_end", "where_end")


def grounded_questions(cand: Candidate, num_frames: int = 8, min_visible: float = 0.6) -> list[tuple[str, str, str]]:
    """[(kind, question, answer)] for every well visible object at the first and the last of the
    `num_frames` uniformly sampled frames; kinds as in KINDS."""
    sc, tr, view = cand.scene, cand.track, cand.view
    ids = sample_indices(sc.num_frames, num_frames)
    out = []
    for when, t in (("start", int(ids[0])), ("end", int(ids[-1]))):
        vis = view.visible(t)
        for i, obj in enumerate(sc.objects):
            if not tr.present[t, i] or vis[i] < min_visible:
                continue
            x, y = tr.pos[t, i]
            out.append((f"colour_{when}", f"What colour is the {obj.shape} at the {when}?", tr.colour[t][i]))
            out.append((f"where_{when}", f"Where is the {obj.shape} at the {when}?",
                        region(float(x), float(y), sc.frame_size)))
    return out


def grounded_conversation(questions: list[tuple[str, str, str]]) -> list[dict]:
    """A LLaVA multi-turn conversation: the video once, then one turn per question."""
    conv = []
    for j, (_, q, a) in enumerate(questions):
        conv += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + q}, {"from": "gpt", "value": a}]
    return conv
