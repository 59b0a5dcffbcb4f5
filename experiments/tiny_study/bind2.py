"""MC letter binding, text only, on the fresh tiny LLM: does a higher lr / warm-up unlock it?"""
import json, random, time, math, sys, torch
from tinyvr.recipes.common import load_model
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2); torch.manual_seed(0); rnd = random.Random(0)
model, proc = load_model("runs/demo/init"); lm = model.language_model; tok = proc.tokenizer
rows = json.load(open("runs/demo/data/sft.json"))
def opts_of(r):
    h = r["conversations"][0]["value"]
    return [l[3:] for l in h.split("\n") if len(l) > 3 and l[1:3] == ". " and l[0] in "ABCDE"]
allopts = [opts_of(r) for r in rows]
words = sorted({o for os_ in allopts for o in os_})
mode = sys.argv[4]   # 'data' = option sets from the data; 'word' = random single words from the option vocabulary
def bind():
    if mode == "data":
        o = list(rnd.choice(allopts)); rnd.shuffle(o)
    else:
        o = rnd.sample(words, 5)
    k = rnd.randrange(len(o))
    q = f"Which option is {o[k]}?\nOptions:\n" + "\n".join(f"{'ABCDE'[i]}. {t}" for i, t in enumerate(o)) + "\nAnswer with the option's letter from the given choices directly.<answer>"
    ids = tok(q)["input_ids"]; ans = tok("ABCDE"[k])["input_ids"]
    return ids + ans, len(ids), len(ids) + len(ans)
steps = int(sys.argv[1]); lr = float(sys.argv[2]); B = int(sys.argv[3])
opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
warm = max(1, steps // 20)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
t0 = time.time(); accs = []
for step in range(steps):
    batch = [bind() for _ in range(B)]
    L = max(len(b[0]) for b in batch)
    ids = torch.zeros(B, L, dtype=torch.long); lab = torch.full((B, L), -100); am = torch.zeros(B, L, dtype=torch.long)
    for i, (s, a, b) in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s); am[i, :len(s)] = 1; lab[i, a:b] = torch.tensor(s[a:b])
    out = lm(input_ids=ids, attention_mask=am, labels=lab)
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
    with torch.no_grad():
        for i, (s, a, b) in enumerate(batch):
            accs.append(float(out.logits[i, a - 1].argmax(-1) == ids[i, a]))
    if (step + 1) % 100 == 0:
        print(f"step {step+1} loss {out.loss.item():.3f} bind {sum(accs[-100*B:])/len(accs[-100*B:]):.3f} {time.time()-t0:.0f}s", flush=True)
