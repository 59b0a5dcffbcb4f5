import json, sys, torch
from tinyvr.recipes.common import load_model
from tinyvr.data.feature_cache import VideoInputs
torch.set_num_threads(1)
model, proc = load_model(sys.argv[1]); model.eval()
rows = json.load(open("runs/demo/data/pretrain.json"))[:4]
vi = VideoInputs(model, proc)
items = [dict(zip(("input_ids","labels"), proc.encode_conversation(r["conversations"]))) for r in rows]
b = proc.collate(items, padding_side="right")
p = [f"runs/demo/data/{r['video']}" for r in rows]
v1 = vi(p); v2 = vi(p[1:] + p[:1])
print({k: (tuple(v.shape), v.float().std().item()) for k, v in v1.items()})
print("input ids has image token:", [(proc.tokenizer.decode(ids[:12])) for ids in b["input_ids"][:1]])
with torch.no_grad():
    o1 = model(**b, **v1); o2 = model(**b, **v2)
    d = (o1.logits - o2.logits).abs()
    print("loss", o1.loss.item(), o2.loss.item(), "max logit diff", d.max().item(), "mean", d.mean().item())
    k = next(iter(v1))
    e1 = model.encode_video(**{k: v1[k]}) if hasattr(model, "encode_video") else None
    print(type(e1), None if e1 is None else (e1.shape, e1.std().item()))
