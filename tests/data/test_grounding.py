"""Grounded questions (tinyvr.data.synthetic.grounding): answers re-derived from rendered pixels."""

from __future__ import annotations

import re

import numpy as np

from tinyvr.data.synthetic.grounding import KINDS, grounded_conversation, grounded_questions
from tinyvr.data.synthetic.render import decode_mp4, encode_mp4
from tinyvr.data.synthetic.scene import sample_indices
from tinyvr.data.synthetic.text import region
from tinyvr.data.synthetic.verify import nearest_colour
from tinyvr.data.synthetic.writer import generate_item


def shape_of(question: str) -> str:
    return re.fullmatch(r"(?:What colour|Where) is the (\w+) at the (?:start|end)\?", question).group(1)


def test_answers_agree_with_the_decoded_frames():
    colours = places = place_ok = 0
    for index in range(12):
        rec, cand = generate_item(3, "foundation", index)
        qs = grounded_questions(cand)
        assert qs and {k for k, _, _ in qs} <= set(KINDS)
        ids = sample_indices(cand.scene.num_frames, 8)
        frames = cand.view.frames()
        decoded, _ = decode_mp4(encode_mp4(frames, rec["fps"]))
        shapes = [o.shape for o in cand.scene.objects]
        for kind, question, answer in qs:
            t = int(ids[0] if kind.endswith("start") else ids[-1])
            i = shapes.index(shape_of(question))
            mask = cand.view.labels(t) == i  # the pixels where object i is seen
            assert mask.sum() > 0
            if kind.startswith("colour"):
                # the median of the H.264-decoded pixels names the answer colour
                assert nearest_colour(np.median(decoded[t][mask], axis=0)) == answer, (index, question)
                colours += 1
            else:
                ys, xs = np.nonzero(mask)
                place_ok += region(xs.mean() + 0.5, ys.mean() + 0.5, cand.scene.frame_size) == answer
                places += 1
    assert colours >= 24 and places == colours
    # the visible part's centre can sit across a region border from the object's centre
    assert place_ok >= 0.9 * places


def test_only_well_visible_objects_are_asked_about():
    for index in range(20):
        _, cand = generate_item(3, "foundation", index)
        ids = sample_indices(cand.scene.num_frames, 8)
        asked = {(k.split("_")[1], shape_of(q)) for k, q, _ in grounded_questions(cand)}
        for when, t in (("start", int(ids[0])), ("end", int(ids[-1]))):
            vis = cand.view.visible(t)
            for i, o in enumerate(cand.scene.objects):
                assert ((when, o.shape) in asked) == bool(cand.track.present[t, i] and vis[i] >= 0.6)


def test_conversation_has_one_video_and_one_turn_per_question():
    conv = grounded_conversation([("colour_start", "What colour is the circle at the start?", "red"),
                                  ("where_end", "Where is the circle at the end?", "at the top")])
    assert [t["from"] for t in conv] == ["human", "gpt", "human", "gpt"]
    assert conv[0]["value"].startswith("<image>\n") and "<image>" not in conv[2]["value"]
    assert conv[3]["value"] == "at the top"


def test_with_options_keeps_the_answer_at_its_letter_and_prefers_the_clips_own_distractors():
    from collections import Counter
    import random

    from tinyvr.data.synthetic.grounding import REGIONS, with_options
    from tinyvr.data.synthetic.scene import COLOURS

    assert len(set(REGIONS)) == 9
    rng, letters, own = random.Random(0), Counter(), 0
    for index in range(30):
        _, cand = generate_item(3, "foundation", index)
        qs = grounded_questions(cand)
        mc = with_options(qs, rng)
        assert [k for k, _, _ in mc] == [k for k, _, _ in qs]
        for (kind, q, a), (_, text, letter) in zip(qs, mc):
            head, rest = text.split("\nOptions:\n")
            assert head == q and rest.endswith("Answer with the option's letter from the given choices directly.")
            opts = dict(line.split(". ", 1) for line in rest.split("\n")[:-1])
            assert list(opts) == list("ABCDE") and len(set(opts.values())) == 5
            assert opts[letter] == a
            assert set(opts.values()) <= set(COLOURS if kind.startswith("colour") else REGIONS)
            others = {x for k, _, x in qs if k == kind and x != a}
            # every other answer of the same kind in the clip is a distractor (up to four)
            own += len(others & set(opts.values())) == min(4, len(others))
            letters[letter] += 1
    assert own == sum(letters.values())
    assert min(letters.values()) > 0.12 * sum(letters.values())  # uniform letters: 20% each


def test_with_options_in_reason_mode_states_the_answer_then_checks_the_options():
    import random

    from tinyvr.data.synthetic.grounding import with_options

    _, cand = generate_item(3, "foundation", 0)
    qs = grounded_questions(cand)
    plain, reason = with_options(qs, random.Random(5)), with_options(qs, random.Random(5), reason=True)
    for (kind, q, a), (_, text, letter), (_, rtext, ranswer) in zip(qs, plain, reason):
        assert rtext == text.replace("Answer with the option's letter from the given choices directly.",
                                     "Output the thinking process in <think> </think> and final answer (option) in "
                                     "<answer> </answer> tags.")  # same options, same letter
        opts = dict(line.split(". ", 1) for line in text.split("\nOptions:\n")[1].split("\n")[:-1])
        k = "ABCDE".index(letter)
        check = "\n".join(f"{c}. {opts[c]}: {'yes' if c == letter else 'no'}" for c in "ABCDE"[:k + 1])
        assert ranswer == f"<think>The answer is {a}.\n{check}</think> <answer>{letter}</answer>"


def test_motion_answers_agree_with_where_the_object_is_seen_in_the_two_frames():
    """The move questions (asked only with motion=True, after the others) name the way the visible
    part of the object went between the first and the last sampled frame, read from the rendered
    object masks; every answer is one of the direction family's options."""
    from tinyvr.data.synthetic.grounding import MOTION_KIND, motion_questions
    from tinyvr.data.synthetic.questions import DIRECTION_OPTIONS

    seen, agree, answers = 0, 0, set()
    for index in range(40):
        _, cand = generate_item(3, "foundation", index)
        plain, moved = grounded_questions(cand), grounded_questions(cand, motion=True)
        assert MOTION_KIND not in {k for k, _, _ in plain}
        assert moved == plain + motion_questions(cand)
        ids = sample_indices(cand.scene.num_frames, 8)
        shapes = [o.shape for o in cand.scene.objects]
        size = cand.scene.frame_size
        for kind, question, answer in motion_questions(cand):
            assert kind == MOTION_KIND and answer in DIRECTION_OPTIONS
            shape = re.fullmatch(r"Which way does the (\w+) move from the start to the end\?", question).group(1)
            i = shapes.index(shape)
            (y0, x0), (y1, x1) = (np.argwhere(cand.view.labels(int(t)) == i).mean(0) for t in (ids[0], ids[-1]))
            dx, dy = (x1 - x0) / size, (y1 - y0) / size
            if answer == "it stays in place":
                ok = max(abs(dx), abs(dy)) < 0.1
            else:
                along, across = (dx, dy) if answer in ("to the left", "to the right") else (dy, dx)
                sign = 1 if answer in ("to the right", "downward") else -1
                ok = sign * along > 0.1 and abs(along) > abs(across)
            agree += ok
            seen += 1
            answers.add(answer)
    assert seen >= 30 and agree >= 0.9 * seen  # the visible part's centre can differ from the object's
    assert answers == set(DIRECTION_OPTIONS)


def test_motion_questions_as_multiple_choice_offer_the_five_directions():
    import random

    from tinyvr.data.synthetic.grounding import MOTION_KIND, motion_questions, with_options
    from tinyvr.data.synthetic.questions import DIRECTION_OPTIONS

    for index in range(10):
        _, cand = generate_item(3, "foundation", index)
        qs = motion_questions(cand)
        for (kind, q, a), (_, mc, letter) in zip(qs, with_options(qs, random.Random(index))):
            options = re.findall(r"^[A-E]\. (.+)$", mc, flags=re.M)
            assert kind == MOTION_KIND and sorted(options) == sorted(DIRECTION_OPTIONS)
            assert options["ABCDE".index(letter)] == a


def _masks(cand, ids):
    """(sampled frame, object) -> the rendered pixels where the object is seen."""
    return [[cand.view.labels(int(t)) == i for i in range(len(cand.scene.objects))] for t in ids]


def test_compare_answers_agree_with_the_rendered_masks():
    """The first and farther questions (asked only with compare=True, last) name the object whose
    rendered mask shows up first among the objects the question names, and the one whose mask's
    centre travels farthest through the sampled frames; both kinds occur, every named shape is in
    the clip, and the answer is one of them."""
    from tinyvr.data.synthetic.grounding import FARTHER_KIND, FIRST_KIND, compare_questions

    agree, asked = {FIRST_KIND: 0, FARTHER_KIND: 0}, {FIRST_KIND: 0, FARTHER_KIND: 0}
    for index in range(120):
        _, cand = generate_item(3, "foundation", index)
        qs = compare_questions(cand)
        assert grounded_questions(cand, motion=True, compare=True) == grounded_questions(cand, motion=True) + qs
        if not qs:
            continue
        ids = sample_indices(cand.scene.num_frames, 8)
        masks = _masks(cand, ids)
        shapes = [o.shape for o in cand.scene.objects]
        for kind, question, answer in qs:
            named = re.findall(r"the (\w+)", question)
            assert len(named) >= 2 and set(named) <= set(shapes) and answer[len("the "):] in named
            objs = [shapes.index(s) for s in named]
            if kind == FIRST_KIND:
                area = {i: [int(m[i].sum()) for m in masks] for i in objs}
                # the first sampled frame where half of the object's largest seen area shows
                first = {i: next(k for k, a in enumerate(area[i]) if a >= 0.5 * max(area[i])) for i in objs}
                best = min(first.values())
                ok = [i for i in objs if first[i] == best] == [shapes.index(answer[4:])]
            else:
                def path(i):
                    c = [np.argwhere(m[i]).mean(0) for m in masks if m[i].any()]
                    return float(np.linalg.norm(np.diff(np.array(c), axis=0), axis=1).sum())
                ok = max(objs, key=path) == shapes.index(answer[4:])
            agree[kind] += ok
            asked[kind] += 1
    assert min(asked.values()) >= 10, asked
    assert all(agree[k] >= 0.9 * asked[k] for k in asked), (agree, asked)


def test_compare_questions_as_multiple_choice_offer_every_shape_and_the_same_option():
    """As multiple choice an object question offers the four shapes and its "same" option, so the
    objects it names are always there and the absent shapes are the other distractors."""
    import random
    from collections import Counter

    from tinyvr.data.synthetic.grounding import SAME, compare_questions, with_options
    from tinyvr.data.synthetic.scene import SHAPES

    letters = Counter()
    for index in range(120):
        _, cand = generate_item(3, "foundation", index)
        qs = compare_questions(cand)
        for (kind, q, a), (k2, mc, letter) in zip(qs, with_options(qs, random.Random(index))):
            options = re.findall(r"^[A-E]\. (.+)$", mc, flags=re.M)
            assert k2 == kind and mc.startswith(q + "\nOptions:\n")
            assert sorted(options) == sorted([f"the {s}" for s in SHAPES] + [SAME[kind]])
            assert options["ABCDE".index(letter)] == a
            letters[letter] += 1
    assert sum(letters.values()) >= 30 and set(letters) == set("ABCDE")  # the answer at every letter
