"""Induction + MC binding curriculum for the tiny LLM, longer, with lr decay and checkpoints.

induct3.py MODEL_DIR SFT_JSON OUT_DIR STEPS LR THREADS
Half the batch is variable-period induction (random prefix, then a random sequence twice); the
other half is binding in the dataset's own prompt format: a real question with its real options,
the right option's text stated once ("Which option is X?" or a hint line), then the letter.
Saves the LLM every 500 steps to OUT_DIR/step-N.pt and prints accuracy per kind.
"""
import json, math, random, sys, time
from pathlib import Path
import torch
from tinyvr.recipes.common import load_model

model_dir, sft_json, out, steps, lr, threads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads); torch.manual_seed(0); rnd = random.Random(0)
out.mkdir(parents=True, exist_ok=True)
model, proc = load_model(model_dir); lm = model.language_model; tok = proc.tokenizer
rows = json.load(open(sft_json))
TAIL = "Answer with the option's letter from the given choices directly."
def parse(r):
    h = r["conversations"][0]["value"].replace("<image>\n", "")
    q = h.split("\nOptions:")[0]
    opts = [l[3:] for l in h.split("\n") if len(l) > 3 and l[1:3] == ". " and l[0] in "ABCDE"]
    return q, opts
items = [parse(r) for r in rows]
V = len(tok)
def bind():
    q, o = rnd.choice(items); o = o[:]; rnd.shuffle(o); k = rnd.randrange(len(o))
    lines = "\n".join(f"{'ABCDE'[i]}. {t}" for i, t in enumerate(o))
    if rnd.random() < 0.5:
        text = f"Which option is {o[k]}?\nOptions:\n{lines}\n{TAIL}"
    else:
        text = f"{q} Hint: {o[k]}.\nOptions:\n{lines}\n{TAIL}"
    ids = tok(text)["input_ids"]; ans = tok("ABCDE"[k])["input_ids"]
    return ids + ans, len(ids), len(ids) + len(ans), "bind"
def induct():
    L = rnd.randint(6, 30); pre = [rnd.randrange(40, V - 10) for _ in range(rnd.randint(0, 20))]
    seq = [rnd.randrange(40, V - 10) for _ in range(L)]
    ids = pre + seq + seq
    return ids, len(pre) + L + 1, len(ids), "ind"
B, warm = 32, 50
opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
decay_from = int(steps * 0.6)  # constant through the plateau, cosine to 10% after it
def f(s):
    if s < warm: return (s + 1) / warm
    if s < decay_from: return 1.0
    p = (s - decay_from) / max(1, steps - decay_from); return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
t0 = time.time(); acc = {"bind": [], "ind": []}
for step in range(steps):
    batch = [induct() if rnd.random() < 0.5 else bind() for _ in range(B)]
    L = max(len(b[0]) for b in batch)
    ids = torch.zeros(B, L, dtype=torch.long); lab = torch.full((B, L), -100); am = torch.zeros(B, L, dtype=torch.long)
    for i, (s, a, b, _) in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s); am[i, :len(s)] = 1; lab[i, a:b] = torch.tensor(s[a:b])
    o = lm(input_ids=ids, attention_mask=am, labels=lab)
    o.loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    with torch.no_grad():
        for i, (s, a, b, kind) in enumerate(batch):
            acc[kind].append((o.logits[i, a - 1:b - 1].argmax(-1) == ids[i, a:b]).float().mean().item())
    if (step + 1) % 250 == 0:
        m = {k: round(sum(v[-1600:]) / max(1, len(v[-1600:])), 3) for k, v in acc.items()}
        print(f"step {step+1} loss {o.loss.item():.3f} lr {sched.get_last_lr()[0]:.2e} {m} {time.time()-t0:.0f}s", flush=True)
    if (step + 1) % 500 == 0:
        torch.save(lm.state_dict(), out / f"step-{step+1}.pt")
