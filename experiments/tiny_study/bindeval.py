"""Letter-binding accuracy of a foundation language checkpoint, per binding format and family.

bindeval.py FOUNDATION_OUT   (reads <out>/init and <out>/language/checkpoint.pt)
"""
import random, sys, collections, torch
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import binding_example, foundation_items
torch.set_num_threads(1)
out = sys.argv[1]
model, proc = load_model(f"{out}/init"); lm = model.language_model
st = torch.load(f"{out}/language/checkpoint.pt", weights_only=True); lm.load_state_dict(st["lm"]); lm.eval()
print("step", st["step"])
recs = [r for r, _ in foundation_items(0, 400)]
pool = sorted({o for r in recs for o in r["options"]})
tok = proc.tokenizer; rng = random.Random(5)
res = collections.defaultdict(list)
picked = collections.Counter()
with torch.no_grad():
    for fmt in ("which", "hint", "tail", "pool"):
        for r in recs[:240]:
            ids, a = binding_example(rng, r, tok, (fmt,), pool)
            logits = lm(input_ids=torch.tensor([ids[:a]])).logits[0, -1]
            ok = int(logits.argmax()) == ids[a]
            picked[tok.decode([int(logits.argmax())])] += 1
            res[(fmt, r["family"] if fmt != "pool" else "-")].append(ok)
for k, v in sorted(res.items()):
    print(k, f"{100*sum(v)/len(v):.0f}% of {len(v)}")
print("predicted", dict(picked))
