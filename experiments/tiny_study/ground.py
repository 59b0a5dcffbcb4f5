"""Dense grounded questions: many short look-ups per clip (does the LLM learn to find one object?)

ground.py MODEL_DIR FEATS STEPS LR THREADS [BATCH] [TURNS]

FEATS is a `qa_scale.py prep` cache (frozen-tower features of foundation items 10000..). Each clip
gets up to TURNS (default 6) one-line questions in a multi-turn conversation, each naming one object
by its shape (shapes are unique in a scene) and asking its colour or its place at the first or the
last sampled frame; every answer is supervised. This is item 16's look-up (question words -> that
object's visual tokens -> an attribute), with six targets per clip instead of one letter.

The last 400 clips are held out. Every 250 steps: teacher-forced accuracy per question type (every
answer token right), with the right clip and with the next clip (the text prior).
"""
import collections, random, sys, time
import numpy as np
import torch
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import spliced_labels
from tinyvr.data.synthetic.grounding import grounded_conversation, grounded_questions
from tinyvr.data.synthetic.writer import generate_item

mdir, fpath, steps, lr, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
bs = int(sys.argv[6]) if len(sys.argv) > 6 else 16
turns = int(sys.argv[7]) if len(sys.argv) > 7 else 6
d = torch.load(fpath, weights_only=False)
feats = d["feats"]
N = len(feats)


def facts(index: int) -> list[tuple[str, str, str]]:
    return grounded_questions(generate_item(0, "foundation", 10000 + index)[1])


t0 = time.time()
F = [facts(i) for i in range(N)]
print("facts", sum(map(len, F)) / N, "per clip", f"{time.time() - t0:.0f}s", flush=True)
model, proc = load_model(mdir)
model.requires_grad_(False)
torch.set_num_threads(threads); torch.manual_seed(0); rng = random.Random(0)


conv = grounded_conversation


def batch(convs, f):
    encs = [dict(zip(("input_ids", "labels"), proc.encode_conversation(c))) for c in convs]
    b = proc.collate(encs, padding_side="right")
    b["video_features"] = f.float()
    return b


val_idx = [i for i in range(N - 400, N) if F[i]]
val_convs = [(F[i], conv(F[i])) for i in val_idx]


def turn_spans(labels):
    """[(start, end)] of each supervised run (one answer + its EOS)."""
    spans, s = [], None
    for p, l in enumerate(labels.tolist() + [-100]):
        if l != -100 and s is None:
            s = p
        elif l == -100 and s is not None:
            spans.append((s, p)); s = None
    return spans


def evaluate(shift):
    model.eval(); acc = collections.defaultdict(list)
    vf = feats[val_idx].roll(shift, 0)
    with torch.no_grad():
        for k in range(0, len(val_convs), 40):
            chunk = val_convs[k:k + 40]
            b = batch([c for _, c in chunk], vf[k:k + 40])
            lab = spliced_labels(model, b, b.pop("labels"))
            pred = model(**b).logits.argmax(-1)
            for r, (fs, _) in enumerate(chunk):
                for (typ, _, _), (s, e) in zip(fs, turn_spans(lab[r])):
                    acc[typ].append(bool((pred[r, s - 1:e - 1] == lab[r, s:e]).all()))
    model.train()
    allv = [x for v in acc.values() for x in v]
    return f"{100 * np.mean(allv):.1f} " + str({k: round(100 * np.mean(v)) for k, v in sorted(acc.items())})


model.connector.requires_grad_(True); model.language_model.requires_grad_(True); model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
train_idx = [i for i in range(N - 400) if F[i]]
print("step 0 right clip", evaluate(0), "| next clip", evaluate(1), flush=True)
run = []
for step in range(steps):
    idx = [rng.choice(train_idx) for _ in range(bs)]
    convs = [conv(rng.sample(F[i], min(turns, len(F[i])))) for i in idx]
    o = model(**batch(convs, feats[idx]))
    o.loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    run.append(o.loss.item())
    if (step + 1) % 250 == 0:
        print(f"step {step + 1} train {np.mean(run[-250:]):.3f} right clip {evaluate(0)} | next clip {evaluate(1)} "
              f"{time.time() - t0:.0f}s", flush=True)
