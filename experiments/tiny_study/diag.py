"""Caption loss with the right clip vs another clip. Args: model dir, pretrain.json, n, video root,
and any 5th argument to score only the caption's first sentence."""
import json, sys, torch
from tinyvr.recipes.common import load_model
from tinyvr.data.feature_cache import VideoInputs
torch.set_num_threads(1)
mdir, jf, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
model, proc = load_model(mdir); model.eval()
rows = json.load(open(jf))[:n]
if len(sys.argv) > 5:
    for r in rows: r["conversations"][1]["value"] = r["conversations"][1]["value"].split(". ")[0] + "."
vi = VideoInputs(model, proc)
root = sys.argv[4] if len(sys.argv) > 4 else "runs/data/synth"
def loss(shift):
    tot, cnt = 0.0, 0
    for i in range(0, n, 16):
        rs = rows[i:i+16]
        items = [dict(zip(("input_ids","labels"), proc.encode_conversation(r["conversations"]))) for r in rs]
        paths = [f"{root}/{rows[(i+j+shift)%n]['video']}" for j in range(len(rs))]
        b = proc.collate(items, padding_side="right"); b.update(vi(paths))
        with torch.no_grad():
            out = model(**b)
        t = int((b["labels"] != -100).sum()); tot += out.loss.item()*t; cnt += t
    return tot/cnt
print("matched", round(loss(0),4), "mismatched", round(loss(7),4))
