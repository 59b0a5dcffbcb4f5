"""Dense letter binding: many look-ups per sequence instead of one (tiny LLM, text only).

dense_bind.py OUT_LOG STEPS LR DENSE_FRACTION [THREADS] [INIT_DIR]

A "dense" example lists five options, then asks "Which option is X?" six times (options drawn with
replacement, so elimination does not help), each letter a target: six look-ups per sequence, not the single letter of
`binding_example`. The rest of each batch is `binding_example` ("which" and "pool" formats, the
product's single-question shape). Accuracy of both kinds is printed every 250 steps; the single
kind is the one SFT needs. Starts from INIT_DIR (default `runs/fd/init`; fresh weights).
"""
import random, sys, time, torch
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import LETTERS, binding_example, foundation_items, option_pool
from tinyvr.data.template import USER, ASSISTANT, ANSWER_SEP

log, steps, lr, dense_frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
torch.manual_seed(0); rng = random.Random(0)
model, proc = load_model(sys.argv[6] if len(sys.argv) > 6 else "runs/fd/init"); lm = model.language_model.train(); tok = proc.tokenizer
import json, os
if not os.path.exists("runs/db/recs.json"):
    json.dump([r for r, _ in foundation_items(0, 2000)], open("runs/db/recs.json", "w"))
recs = json.load(open("runs/db/recs.json"))
pool = option_pool(recs)


def dense_example():
    opts = rng.sample(pool, 5)
    lines = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(opts))
    ids, targets, first, seen = tok(f"{USER}Options:\n{lines}\n")["input_ids"], [], [], set()
    for _ in range(6):  # with replacement, so elimination cannot answer; only first asks are scored
        k = rng.randrange(5)
        ids += tok(f"Which option is {opts[k]}? {ASSISTANT}{ANSWER_SEP}{LETTERS[k]}\n")["input_ids"]
        targets.append(len(ids) - 2)  # the letter, before the newline
        first.append(k not in seen); seen.add(k)
    return ids, targets, first


def single_example():
    ids, a = binding_example(rng, rng.choice(recs), tok, ("which", "pool"), pool)
    return ids, [a], [True]


opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
hist = {"dense_first": [], "single": []}
t0, B = time.time(), 32
with open(log, "w") as f:
    for step in range(steps):
        ex = [(*dense_example(), "dense_first") if rng.random() < dense_frac else (*single_example(), "single")
              for _ in range(B)]
        L = max(len(e[0]) for e in ex)
        ids = torch.zeros(B, L, dtype=torch.long); att = torch.zeros(B, L, dtype=torch.long)
        lab = torch.full((B, L), -100)
        for i, (s, t, _, _) in enumerate(ex):
            ids[i, :len(s)] = torch.tensor(s); att[i, :len(s)] = 1
            for j in t:
                lab[i, j] = s[j]
        out = lm(input_ids=ids, attention_mask=att, labels=lab)
        out.loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            pred = out.logits.argmax(-1)
            for i, (s, t, first, kind) in enumerate(ex):
                hist[kind] += [float(pred[i, j - 1] == s[j]) for j, f in zip(t, first) if f]
        if (step + 1) % 250 == 0:
            m = {k: round(sum(v[-2000:]) / max(1, len(v[-2000:])), 3) for k, v in hist.items()}
            print(f"step {step + 1} loss {out.loss.item():.3f} {m} {time.time() - t0:.0f}s", file=f, flush=True)
torch.save(lm.state_dict(), log + ".pt")
