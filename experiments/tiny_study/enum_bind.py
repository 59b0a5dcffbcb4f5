"""Letter binding as a chain of copies: the answer goes through the options one by one (text only).

enum_bind.py OUT_LOG STEPS LR [THREADS] [INIT_DIR] [MODE]

A single-step answer ("ASSISTANT: B") needs a content look-up inside one forward pass: find the
option whose text matches, read the letter in front of it. MODE `enum` (default) spells the
look-up out instead:

    ASSISTANT: A. blue cube: no
    B. red ball: yes
    Answer: B

Each option line is copied from the prompt (induction), judged against the asked text (does this
line's text appear in the question?), and the enumeration stops at the first "yes"; the final
letter is the most recent line's letter. Every target token is supervised. MODE `single` is the
product's one-letter answer in the same run shape, for a side-by-side rate. Every 250 steps prints
the share of examples whose every target token is predicted right under teacher forcing (= the
greedy answer is exactly right) and the share whose final letter is right.
"""
import json, os, random, sys, time
import torch
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import LETTERS, foundation_items, option_pool
from tinyvr.data.template import USER, ASSISTANT, ANSWER_SEP

log, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
mode = sys.argv[6] if len(sys.argv) > 6 else "enum"
torch.manual_seed(0); rng = random.Random(0)
model, proc = load_model(sys.argv[5] if len(sys.argv) > 5 else "runs/f2m")
lm = model.language_model.train(); tok = proc.tokenizer
os.makedirs("runs/db", exist_ok=True)
if not os.path.exists("runs/db/recs.json"):
    json.dump([r for r, _ in foundation_items(0, 2000)], open("runs/db/recs.json", "w"))
recs = json.load(open("runs/db/recs.json"))
pool = option_pool(recs)


def example():
    """(ids, first target index, index of the final letter)."""
    if rng.random() < 0.5:
        opts = rng.sample(pool, 5)
    else:
        opts = list(rng.choice(recs)["options"]); rng.shuffle(opts)
    k = rng.randrange(5)
    lines = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(opts))
    prompt = tok(f"{USER}Which option is {opts[k]}?\nOptions:\n{lines}\n{ASSISTANT}")["input_ids"]
    if mode == "enum":
        steps_ = "\n".join(f"{LETTERS[i]}. {opts[i]}: {'yes' if i == k else 'no'}" for i in range(k + 1))
        answer = tok(f"{ANSWER_SEP}{steps_}\nAnswer: {LETTERS[k]}")["input_ids"]
    else:
        answer = tok(f"{ANSWER_SEP}{LETTERS[k]}")["input_ids"]
    ids = prompt + answer
    return ids, len(prompt), len(ids) - 1


opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
hist = {"exact": [], "letter": []}
t0, B = time.time(), 32
with open(log, "w") as f:
    for step in range(steps):
        ex = [example() for _ in range(B)]
        L = max(len(e[0]) for e in ex)
        ids = torch.zeros(B, L, dtype=torch.long); att = torch.zeros(B, L, dtype=torch.long)
        lab = torch.full((B, L), -100)
        for i, (s, a, _) in enumerate(ex):
            ids[i, :len(s)] = torch.tensor(s); att[i, :len(s)] = 1
            lab[i, a:len(s)] = torch.tensor(s[a:])
        out = lm(input_ids=ids, attention_mask=att, labels=lab)
        out.loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            pred = out.logits.argmax(-1)
            for i, (s, a, last) in enumerate(ex):
                right = pred[i, a - 1:len(s) - 1] == ids[i, a:len(s)]
                hist["exact"].append(float(right.all()))
                hist["letter"].append(float(pred[i, last - 1] == s[last]))
        if (step + 1) % 250 == 0 or step == 0:
            m = {k: round(sum(v[-1600:]) / max(1, len(v[-1600:])), 3) for k, v in hist.items()}
            print(f"step {step + 1} loss {out.loss.item():.3f} {m} {time.time() - t0:.0f}s", file=f, flush=True)
torch.save(lm.state_dict(), log + ".pt")
