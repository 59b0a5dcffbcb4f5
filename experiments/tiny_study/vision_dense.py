"""The tower alone on a dense per-patch objective from the generator's ground truth.

vision_dense.py MODEL_DIR OUT.pt CLIPS STEPS LR THREADS
Scenes are drawn in memory (no mp4): for each of 8 uniformly sampled frames, every kept patch gets
the colour and the shape of the object covering most of it (>= 1/8 of its pixels), else background.
Two linear heads on hidden_states[-2]; prints held-out accuracy on object patches.
"""
import sys, time
import numpy as np, torch
from tinyvr.recipes.common import load_model
from tinyvr.data.synthetic.questions import FAMILIES, Ctx, build_candidate
from tinyvr.data.synthetic.scene import COLOURS, SHAPES, sample_indices

model_dir, out, n_clips, steps, lr, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads); torch.manual_seed(0)
model, proc = load_model(model_dir)
T, S, P = proc.num_frames, proc.image_size, model.config.vision_config.patch_size
g = S // P
def clip(rng):
    c, _ = build_candidate(rng, FAMILIES[int(rng.integers(len(FAMILIES)))], Ctx())
    v, sc = c.view, c.scene
    ts = sample_indices(sc.num_frames, T)
    frames = np.stack([v.frame(int(t)) for t in ts])
    col = np.zeros((T, g * g), dtype=np.int64); shp = np.zeros((T, g * g), dtype=np.int64)
    for k, t in enumerate(ts):
        lab = v.labels(int(t)).astype(np.int64).reshape(g, P, g, P).transpose(0, 2, 1, 3).reshape(g * g, P * P)
        for p in range(g * g):
            ids, cnt = np.unique(lab[p][lab[p] >= 0], return_counts=True)
            if len(ids) and cnt.max() >= P * P // 8:
                i = int(ids[cnt.argmax()])
                col[k, p] = 1 + COLOURS.index(c.track.colour[int(t)][i]); shp[k, p] = 1 + SHAPES.index(sc.objects[i].shape)
    return proc.frames_to_pixel_values(frames), torch.from_numpy(col[:, 1:]), torch.from_numpy(shp[:, 1:])
t0 = time.time(); rng = np.random.default_rng(12345)
data = [clip(rng) for _ in range(n_clips)]
X = torch.stack([d[0] for d in data]); C = torch.stack([d[1] for d in data]).flatten(1); Sh = torch.stack([d[2] for d in data]).flatten(1)
print("clips", X.shape, f"{time.time()-t0:.0f}s; object patches {(C > 0).float().mean():.3f}", flush=True)
n_va = max(64, n_clips // 10); Xva, Cva, Sva = X[:n_va], C[:n_va], Sh[:n_va]; Xtr, Ctr, Str = X[n_va:], C[n_va:], Sh[n_va:]
D = model.config.vision_config.hidden_size
hc, hs = torch.nn.Linear(D, 1 + len(COLOURS)), torch.nn.Linear(D, 1 + len(SHAPES))
tower = model.vision_tower; tower.requires_grad_(True)
params = list(tower.parameters()) + list(hc.parameters()) + list(hs.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
w = torch.ones(1 + len(COLOURS)); w[0] = 0.2  # background is most patches
ws = torch.ones(1 + len(SHAPES)); ws[0] = 0.2
def evaluate():
    with torch.no_grad():
        f = torch.cat([model.vision_features(Xva[i:i + 32]) for i in range(0, n_va, 32)])
        pc, ps = hc(f).argmax(-1), hs(f).argmax(-1)
    m = Cva > 0
    return round((pc[m] == Cva[m]).float().mean().item(), 3), round((ps[m] == Sva[m]).float().mean().item(), 3), round((pc[~m] == 0).float().mean().item(), 3)
print("init colour/shape/bg acc", evaluate(), flush=True)
B = 16
for step in range(steps):
    idx = torch.randint(len(Xtr), (B,))
    f = model.vision_features(Xtr[idx])
    loss = torch.nn.functional.cross_entropy(hc(f).flatten(0, 1), Ctr[idx].flatten(), weight=w) + \
        torch.nn.functional.cross_entropy(hs(f).flatten(0, 1), Str[idx].flatten(), weight=ws)
    loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (step + 1) % 50 == 0:
        print(f"step {step+1} loss {loss.item():.3f} val colour/shape/bg {evaluate()} {time.time()-t0:.0f}s", flush=True)
torch.save(tower.state_dict(), out)
