"""Does the LLM learn to read the video on a short, fully visual target? (caption's first sentence)

align.py MODEL_DIR DATA_DIR STEPS LR THREADS [trainable: connector,language_model]
Tower frozen (features computed once). Prints the first-sentence loss with the right clip and with
another clip on 96 held-out clips every 50 steps.
"""
import json, sys, time, torch
from tinyvr.recipes.common import load_model
from tinyvr.data.feature_cache import VideoInputs
mdir, data, steps, lr, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
parts = (sys.argv[6] if len(sys.argv) > 6 else "connector,language_model").split(",")
torch.set_num_threads(threads); torch.manual_seed(0)
model, proc = load_model(mdir)
model.requires_grad_(False)
for p in parts: getattr(model, p).requires_grad_(True)
rows = json.load(open(f"{data}/pretrain.json"))
for r in rows: r["conversations"][1]["value"] = r["conversations"][1]["value"].split(". ")[0] + "."
vi = VideoInputs(model, proc)
t0 = time.time()
feats = [vi([f"{data}/{r['video']}"])["video_features"][0] for r in rows]
print("features", len(feats), f"{time.time()-t0:.0f}s", flush=True)
enc = [dict(zip(("input_ids", "labels"), proc.encode_conversation(r["conversations"]))) for r in rows]
va, tr = list(range(96)), list(range(96, len(rows)))
def batch(idx, shift=0):
    b = proc.collate([enc[i] for i in idx], padding_side="right")
    b["video_features"] = torch.stack([feats[idx[(j + shift) % len(idx)]] for j in range(len(idx))])
    return b
def evaluate():
    model.eval(); out = []
    with torch.no_grad():
        for shift in (0, 7):
            tot = cnt = 0
            for i in range(0, 96, 32):
                b = batch(va[i:i + 32], shift); o = model(**b); t = int((b["labels"] != -100).sum()); tot += o.loss.item() * t; cnt += t
            out.append(round(tot / cnt, 4))
    model.train(); return out
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
g = torch.Generator().manual_seed(0)
print("step 0 matched/mismatched", evaluate(), flush=True)
for step in range(steps):
    idx = [tr[int(i)] for i in torch.randint(len(tr), (16,), generator=g)]
    o = model(**batch(idx)); o.loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); opt.zero_grad()
    if (step + 1) % 50 == 0:
        print(f"step {step+1} train {o.loss.item():.3f} matched/mismatched {evaluate()} {time.time()-t0:.0f}s", flush=True)
