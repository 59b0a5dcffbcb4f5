"""Can the tiny tower learn colour+shape perception fast with a direct objective? (multi-label from captions)"""
import json, re, time, sys, torch
from tinyvr.recipes.common import load_model
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1); torch.manual_seed(0)
model, proc = load_model("runs/demo3/init")
tower = model.vision_tower
C = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"]; S = ["circle", "square", "triangle", "diamond"]
rows = json.load(open("runs/demo3/data/pretrain.json"))
pat = re.compile(r"\b(" + "|".join(C) + r")\s+(" + "|".join(S) + r")")
X, Y = [], []
t0 = time.time()
for r in rows:
    first = r["conversations"][1]["value"].split(". ")[0]
    y = torch.zeros(len(C) * len(S))
    for c, s in pat.findall(first):
        y[C.index(c) * len(S) + S.index(s)] = 1
    if y.sum() == 0: continue
    X.append(proc.load_video(f"runs/demo3/data/{r['video']}")); Y.append(y)
X, Y = torch.stack(X), torch.stack(Y)
print("decoded", X.shape, f"{time.time()-t0:.0f}s", "labels/clip", Y.sum(1).mean().item(), flush=True)
n_tr = int(0.8 * len(X)); Xtr, Ytr, Xva, Yva = X[:n_tr], Y[:n_tr], X[n_tr:], Y[n_tr:]
D = tower.config.hidden_size
head = torch.nn.Linear(D, Y.shape[1])
def feats(px):  # [B,T,3,H,W] -> max over frames of mean-pooled patch features
    B, T = px.shape[:2]
    h = model.vision_features(px)  # [B, T*P, D]
    return h.view(B, T, -1, D).max(2).values.max(1).values
params = list(tower.parameters()) + list(head.parameters())
for p in tower.parameters(): p.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=float(sys.argv[2]) if len(sys.argv) > 2 else 1e-3)
def evaluate():
    with torch.no_grad():
        logits = torch.cat([head(feats(Xva[i:i+32])) for i in range(0, len(Xva), 32)])
    pred = (logits > 0).float()
    exact = (pred == Yva).all(1).float().mean().item()
    # top-k: take the k highest logits, k = true label count
    hits = 0
    for l, y in zip(logits, Yva):
        k = int(y.sum()); hits += y[l.topk(k).indices].sum().item() / k
    return exact, hits / len(Yva)
print("init val exact/topk", evaluate(), flush=True)
step = 0
for ep in range(int(sys.argv[3]) if len(sys.argv) > 3 else 6):
    perm = torch.randperm(n_tr)
    for i in range(0, n_tr, 32):
        idx = perm[i:i+32]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(feats(Xtr[idx])), Ytr[idx])
        loss.backward(); opt.step(); opt.zero_grad(); step += 1
    print(f"epoch {ep+1} step {step} loss {loss.item():.3f} val exact/topk {evaluate()} {time.time()-t0:.0f}s", flush=True)
