"""Letter binding ("Which option is X?", text only, fresh tiny LLM of runs/demo12/init) with a short
causal depthwise convolution added to the residual stream: `none`, `embed` (after the embeddings) or
`layers` (before every decoder layer). Share of right answer letters over the last 100 steps, also
split by whether X is one token. Args: mode steps lr kernel [threads]."""
import json, random, time, sys, torch
from torch import nn
from tinyvr.recipes.common import load_model
mode, steps, lr, kernel = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(threads); torch.manual_seed(0); rnd = random.Random(0)
model, proc = load_model("runs/demo12/init"); lm = model.language_model; tok = proc.tokenizer
rows = json.load(open("runs/demo12/data/sft.json"))
def opts_of(r):
    h = r["conversations"][0]["value"]
    return [l[3:] for l in h.split("\n") if len(l) > 3 and l[1:3] == ". " and l[0] in "ABCDE"]
words = sorted({o for r in rows for o in opts_of(r)})
class ShortConv(nn.Module):
    def __init__(self, d, k):
        super().__init__(); self.k = k
        self.conv = nn.Conv1d(d, d, k, groups=d, bias=False)
    def forward(self, h):  # [B, L, D]
        x = nn.functional.pad(h.transpose(1, 2), (self.k - 1, 0))
        return h + self.conv(x).transpose(1, 2)
d = lm.config.hidden_size; convs = nn.ModuleList()
if mode == "embed":
    c = ShortConv(d, kernel); convs.append(c)
    lm.model.embed_tokens.register_forward_hook(lambda m, i, o: c(o))
elif mode == "layers":
    for layer in lm.model.layers:
        c = ShortConv(d, kernel); convs.append(c)
        def pre(m, args, kwargs, c=c):
            if args: return (c(args[0]),) + args[1:], kwargs
            kwargs["hidden_states"] = c(kwargs["hidden_states"]); return args, kwargs
        layer.register_forward_pre_hook(pre, with_kwargs=True)
def bind():
    o = rnd.sample(words, 5); k = rnd.randrange(5)
    q = (f"USER: Which option is {o[k]}?\nOptions:\n" + "\n".join(f"{'ABCDE'[i]}. {t}" for i, t in enumerate(o))
         + "\nAnswer with the option's letter from the given choices directly. ASSISTANT:")
    ids = tok(q)["input_ids"]; ans = tok("ABCDE"[k])["input_ids"]
    return ids + ans, len(ids), len(ids) + len(ans), len(tok(" " + o[k])["input_ids"]) == 1
params = list(lm.parameters()) + list(convs.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 50))
t0 = time.time(); acc = []; acc1 = []; accn = []; B = 32
for step in range(steps):
    batch = [bind() for _ in range(B)]
    L = max(len(b[0]) for b in batch)
    ids = torch.zeros(B, L, dtype=torch.long); lab = torch.full((B, L), -100); am = torch.zeros(B, L, dtype=torch.long)
    for i, (s, a, b, _) in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s); am[i, :len(s)] = 1; lab[i, a:b] = torch.tensor(s[a:b])
    out = lm(input_ids=ids, attention_mask=am, labels=lab)
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    with torch.no_grad():
        for i, (s, a, b, one) in enumerate(batch):
            acc.append((out.logits[i, a - 1:b - 1].argmax(-1) == ids[i, a:b]).float().mean().item())
            (acc1 if one else accn).append(acc[-1])
    if (step + 1) % 100 == 0:
        print(f"{mode} k{kernel} step {step+1} loss {out.loss.item():.3f} bind {sum(acc[-3200:])/len(acc[-3200:]):.3f} "
              f"one-token {sum(acc1[-1000:])/max(1,len(acc1[-1000:])):.3f} multi {sum(accn[-2000:])/max(1,len(accn[-2000:])):.3f} "
              f"{time.time()-t0:.0f}s", flush=True)
