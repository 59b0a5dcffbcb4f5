"""Grounded answers by kind on a foundation's held-out align clips: colour or place, start or end.

where_eval.py MODEL_DIR [N] [THREADS]

The first N (default 200, the align part's held-out clips) foundation items; each clip's grounded
questions of one kind asked openly in one conversation, teacher-forced, with the right clip and with
the next one (the text prior). Prints the share of answers right (every token) per kind.
"""
import sys

import torch

from held_out_clips import held_out_clips
from tinyvr.data.synthetic.grounding import KINDS, grounded_conversation
from tinyvr.recipes.foundation import answers_right

model, proc, n, feats, grounded = held_out_clips(sys.argv[1:])
for kind in KINDS:
    line = []
    for shift in (0, 1):
        right = asked = 0
        idx = [j for j in range(n) if any(q[0] == kind for q in grounded[j])]
        with torch.no_grad():
            for s in range(0, len(idx), 32):
                part = idx[s:s + 32]
                convs = [grounded_conversation([q for q in grounded[j] if q[0] == kind]) for j in part]
                enc = [dict(zip(("input_ids", "labels"), proc.encode_conversation(c))) for c in convs]
                b = proc.collate(enc, padding_side="right")
                b["video_features"] = feats[[idx[(s + k + shift) % len(idx)] for k in range(len(part))]]
                r, a = answers_right(model, b)
                right, asked = right + r, asked + a
        line.append(f"{100 * right / asked:.1f}")
    print(f"{kind:13s} right clip / next clip: {line[0]} / {line[1]}  ({asked} answers)", flush=True)
