"""Variable-period induction mixed with MC letter binding (text only, fresh tiny LLM)."""
import json, random, time, math, sys, torch
from tinyvr.recipes.common import load_model
torch.set_num_threads(2); torch.manual_seed(0); rnd = random.Random(0)
model, proc = load_model("runs/demo/init"); lm = model.language_model; tok = proc.tokenizer
rows = json.load(open("runs/demo/data/sft.json"))
def opts_of(r):
    h = r["conversations"][0]["value"]
    return [l[3:] for l in h.split("\n") if len(l) > 3 and l[1:3] == ". " and l[0] in "ABCDE"]
words = sorted({o for r in rows for o in opts_of(r)})
V = len(tok)
def bind():
    o = rnd.sample(words, 5); k = rnd.randrange(5)
    q = f"Which option is {o[k]}?\nOptions:\n" + "\n".join(f"{'ABCDE'[i]}. {t}" for i, t in enumerate(o)) + "\nAnswer with the option's letter from the given choices directly.<answer>"
    ids = tok(q)["input_ids"]; ans = tok("ABCDE"[k])["input_ids"]
    return ids + ans, len(ids), len(ids) + len(ans), "bind"
def induct():
    L = rnd.randint(6, 30); pre = [rnd.randrange(40, V - 10) for _ in range(rnd.randint(0, 20))]
    seq = [rnd.randrange(40, V - 10) for _ in range(L)]
    ids = pre + seq + seq
    return ids, len(pre) + L + 1, len(ids), "ind"
frac, steps, lr = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]); B = 32
opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
warm = 50
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm))
t0 = time.time(); acc = {"bind": [], "ind": []}
for step in range(steps):
    batch = [induct() if rnd.random() < frac else bind() for _ in range(B)]
    L = max(len(b[0]) for b in batch)
    ids = torch.zeros(B, L, dtype=torch.long); lab = torch.full((B, L), -100); am = torch.zeros(B, L, dtype=torch.long)
    for i, (s, a, b, _) in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s); am[i, :len(s)] = 1; lab[i, a:b] = torch.tensor(s[a:b])
    out = lm(input_ids=ids, attention_mask=am, labels=lab)
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    with torch.no_grad():
        for i, (s, a, b, kind) in enumerate(batch):
            acc[kind].append((out.logits[i, a - 1:b - 1].argmax(-1) == ids[i, a:b]).float().mean().item())
    if (step + 1) % 250 == 0:
        m = {k: round(sum(v[-1600:]) / max(1, len(v[-1600:])), 3) for k, v in acc.items()}
        print(f"step {step+1} loss {out.loss.item():.3f} {m} {time.time()-t0:.0f}s", flush=True)
