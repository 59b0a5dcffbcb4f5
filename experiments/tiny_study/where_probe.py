"""Is an object's place in the video tokens? An attention probe per representation.

where_probe.py MODEL_DIR N [THREADS] [TOWER]

TOWER: a foundation's vision/tower.safetensors to put into MODEL_DIR's model first (to probe a
tower before the align part has trained a connector for it).

For N foundation clips (items 10000..), every object well visible in a sampled frame gives one
example: the query is its shape (unique in a scene), the tokens are that frame's representation,
the target its region (nine) or its colour. A one-head attention probe (learned shape query over a
linear map of the tokens) is trained on 80% of the clips and scored on the rest, for: the tower's
patch features (63 per frame), the same with each patch's index appended (the upper bound), and
the connector's output for that frame (its latents). Chance: the majority class of the test part.
"""
import sys, time
import numpy as np
import torch
from torch import nn
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import clip_pixels
from tinyvr.data.synthetic.scene import COLOURS, SHAPES
from tinyvr.data.synthetic.writer import generate_item
from tinyvr.data.synthetic.grounding import REGIONS, object_facts

mdir, N = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
torch.manual_seed(0)
model, proc = load_model(mdir)
if len(sys.argv) > 4:
    from safetensors.torch import load_file
    model.vision_tower.load_state_dict(load_file(sys.argv[4]))
model.eval()
T = proc.num_frames
lat = model.config.num_queries // model.config.group  # latents per group
per_group = T // model.config.group  # frames per group
t0 = time.time()
patch, conn, ex = [], [], []  # per clip: [T, 63, C], [T', lat, D]; examples (clip, t, shape, region, colour)
with torch.no_grad():
    for i in range(N):
        _, cand = generate_item(0, "foundation", 10000 + i)
        px, ids = clip_pixels(cand, proc)
        f = model.vision_features(px.unsqueeze(0))  # [1, T*P', C]
        e = model.connector(f)  # [1, Q, D]
        patch.append(f[0].view(T, -1, f.shape[-1]))
        conn.append(e[0].view(model.config.group, lat, -1))
        ex += [(i, *fact) for fact in object_facts(cand, T)]  # (frame, shape, region, colour)
print(f"{N} clips, {len(ex)} examples, {time.time() - t0:.0f}s", flush=True)
ex = np.array(ex)
train = ex[ex[:, 0] < int(0.8 * N)]
test = ex[ex[:, 0] >= int(0.8 * N)]


class Probe(nn.Module):
    def __init__(self, dim, classes, width=64):
        super().__init__()
        self.q = nn.Embedding(len(SHAPES), width)
        self.k = nn.Linear(dim, width)
        self.v = nn.Linear(dim, width)
        self.out = nn.Sequential(nn.Linear(width * 2, width), nn.GELU(), nn.Linear(width, classes))

    def forward(self, toks, shape):  # toks [B, L, dim]
        q = self.q(shape)
        a = (self.k(toks) @ q.unsqueeze(-1)).squeeze(-1).div(q.shape[-1] ** 0.5).softmax(-1)
        pooled = (a.unsqueeze(-1) * self.v(toks)).sum(1)
        return self.out(torch.cat([pooled, q], -1))


def tokens(kind, rows):
    if kind == "patch":
        return torch.stack([patch[c][t] for c, t in rows])
    if kind == "patch+index":
        p = torch.stack([patch[c][t] for c, t in rows])
        return torch.cat([p, torch.eye(p.shape[1]).expand(p.shape[0], -1, -1)], -1)
    return torch.stack([conn[c][t // per_group] for c, t in rows])


def run(kind, target):
    col = 3 if target == "region" else 4
    classes = len(REGIONS) if target == "region" else len(COLOURS)
    dim = tokens(kind, [(0, 0)]).shape[-1]
    probe = Probe(dim, classes)
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(1500):
        b = train[torch.randint(len(train), (64,), generator=g).numpy()]
        loss = nn.functional.cross_entropy(probe(tokens(kind, b[:, :2]), torch.tensor(b[:, 2])), torch.tensor(b[:, col]))
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        pred = torch.cat([probe(tokens(kind, test[s:s + 256, :2]), torch.tensor(test[s:s + 256, 2])).argmax(-1)
                          for s in range(0, len(test), 256)])
    acc = (pred.numpy() == test[:, col]).mean()
    major = np.bincount(test[:, col]).max() / len(test)
    print(f"{target:7s} from {kind:12s}: {100 * acc:5.1f}%  (majority {100 * major:.1f}%)  {time.time() - t0:.0f}s", flush=True)


kinds = ("patch", "patch+index") if len(sys.argv) > 4 else ("patch", "patch+index", "connector")
for target in ("region", "colour"):
    for kind in kinds:
        run(kind, target)
