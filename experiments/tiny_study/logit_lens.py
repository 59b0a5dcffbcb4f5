"""At which layer does a grounded answer appear? A logit lens on a foundation's held-out align clips.

logit_lens.py MODEL_DIR [N] [THREADS]

For the first N (default 200) foundation items, each clip's grounded questions asked openly (the
answer's first token: a colour or a place word) and as multiple choice (the letter; the bare space
the tokenizer puts before it is skipped), teacher-forced with the right clip and with the next one
(the text prior). Every layer's hidden state at the position that predicts that token goes through
the final norm and the LM head; printed: the share of those tokens that are the top-1 token, per
layer. If the open answer only appears at the last layer, a one-letter answer, which must look that
answer up among the options afterwards, has no layer left to do it in.
"""
import random
import sys

import torch

from held_out_clips import held_out_clips
from tinyvr.data.synthetic.grounding import grounded_conversation, with_options
from tinyvr.recipes.foundation import spliced_labels

model, proc, n, feats, grounded = held_out_clips(sys.argv[1:])
lm = model.language_model
space = proc.tokenizer.convert_tokens_to_ids(proc.tokenizer.tokenize(" "))[0]
norm, head = lm.model.norm, lm.get_output_embeddings()
forms = {"open": lambda j: grounded[j], "one letter": lambda j: with_options(grounded[j], random.Random(j))}
for form, questions in forms.items():
    for shift in (0, 1):
        idx = [j for j in range(n) if grounded[j]]
        right, asked = None, 0
        with torch.no_grad():
            for s in range(0, len(idx), 32):
                part = idx[s:s + 32]
                enc = [dict(zip(("input_ids", "labels"), proc.encode_conversation(grounded_conversation(questions(j)))))
                       for j in part]
                b = proc.collate(enc, padding_side="right")
                b["video_features"] = feats[[idx[(s + k + shift) % len(idx)] for k in range(len(part))]]
                labels = spliced_labels(model, b, b["labels"])
                out = model(**{k: v for k, v in b.items() if k != "labels"}, output_hidden_states=True)
                sup = (labels[:, 1:] != -100) & (labels[:, 1:] != space)  # a letter comes as " " then "D"
                first = sup & ~torch.cat([torch.zeros_like(sup[:, :1]), sup[:, :-1]], dim=1)  # an answer's first token
                target = labels[:, 1:][first]
                hits = [int((head(norm(h[:, :-1][first])).argmax(-1) == target).sum()) for h in out.hidden_states]
                right = hits if right is None else [a + b for a, b in zip(right, hits)]
                asked += int(first.sum())
        clip = "right clip" if shift == 0 else "next clip"
        print(f"{form:10s} {clip}: top-1 after each layer (0 = embeddings): "
              + " ".join(f"{100 * r / asked:5.1f}" for r in right) + f"  ({asked} answers)", flush=True)
