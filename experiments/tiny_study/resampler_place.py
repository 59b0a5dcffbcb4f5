"""Can the connector carry an object's place at all? Train it end to end on place.

resampler_place.py MODEL_DIR N [THREADS] [TOWER] [STEPS]

As where_probe.py (the same examples and attention probe over one frame's connector latents), but
the connector is trained together with the probe on the region target, from MODEL_DIR's weights.
High accuracy: the resampler's latents can hold place and the align part's signal does not ask
for it; chance: the architecture (latents per frame, one layer) loses it.
"""
import sys, time
import numpy as np
import torch
from torch import nn
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import clip_pixels
from tinyvr.data.synthetic.scene import SHAPES
from tinyvr.data.synthetic.writer import generate_item
from tinyvr.data.synthetic.grounding import REGIONS, object_facts

mdir, N = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 1500
torch.manual_seed(0)
model, proc = load_model(mdir)
if len(sys.argv) > 4 and sys.argv[4] != "-":
    from safetensors.torch import load_file
    model.vision_tower.load_state_dict(load_file(sys.argv[4]))
model.eval()
T, G = proc.num_frames, model.config.group
lat = model.config.num_queries // G
t0 = time.time()
feats, ex = [], []
with torch.no_grad():
    for i in range(N):
        _, cand = generate_item(0, "foundation", 10000 + i)
        px, ids = clip_pixels(cand, proc)
        feats.append(model.vision_features(px.unsqueeze(0))[0])
        ex += [(i, k, shape, region) for k, shape, region, _ in object_facts(cand, T)]
feats = torch.stack(feats)
ex = np.array(ex)
train, test = ex[ex[:, 0] < int(0.8 * N)], ex[ex[:, 0] >= int(0.8 * N)]
print(f"{N} clips, {len(ex)} examples, {time.time() - t0:.0f}s", flush=True)


class Probe(nn.Module):
    def __init__(self, dim, classes, width=64):
        super().__init__()
        self.q, self.k, self.v = nn.Embedding(len(SHAPES), width), nn.Linear(dim, width), nn.Linear(dim, width)
        self.out = nn.Sequential(nn.Linear(width * 2, width), nn.GELU(), nn.Linear(width, classes))

    def forward(self, toks, shape):
        q = self.q(shape)
        a = (self.k(toks) @ q.unsqueeze(-1)).squeeze(-1).div(q.shape[-1] ** 0.5).softmax(-1)
        return self.out(torch.cat([(a.unsqueeze(-1) * self.v(toks)).sum(1), q], -1))


conn = model.connector.train().requires_grad_(True)
probe = Probe(model.config.text_config.hidden_size, len(REGIONS))
opt = torch.optim.Adam(list(probe.parameters()) + list(conn.parameters()), lr=1e-3)
g = torch.Generator().manual_seed(0)


def frame_tokens(rows):
    clips = torch.tensor(rows[:, 0])
    out = conn(feats[clips]).view(len(rows), G, lat, -1)  # [B, G, lat, D]
    return out[torch.arange(len(rows)), torch.tensor(rows[:, 1]) // (T // G)]


def score():
    with torch.no_grad():
        pred = torch.cat([probe(frame_tokens(test[s:s + 128]), torch.tensor(test[s:s + 128, 2])).argmax(-1)
                          for s in range(0, len(test), 128)])
    return 100 * (pred.numpy() == test[:, 3]).mean()


print(f"step 0: {score():.1f}% (majority {100 * np.bincount(test[:, 3]).max() / len(test):.1f}%)", flush=True)
for step in range(steps):
    b = train[torch.randint(len(train), (64,), generator=g).numpy()]
    loss = nn.functional.cross_entropy(probe(frame_tokens(b), torch.tensor(b[:, 2])), torch.tensor(b[:, 3]))
    opt.zero_grad(); loss.backward(); opt.step()
    if (step + 1) % 250 == 0:
        print(f"step {step + 1}: loss {loss.item():.3f}, held-out region {score():.1f}%  {time.time() - t0:.0f}s", flush=True)
