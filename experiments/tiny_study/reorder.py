"""Rewrite SFT json / test jsonl with options in alphabetical order (experiment: is binding the blocker?)."""
import json, re, sys
L = "ABCDE"
def reorder(opts, ans):
    k = L.index(ans); tgt = opts[k]
    new = sorted(opts); return new, L[new.index(tgt)]
def opt_block(opts): return "\n".join(f"{L[i]}. {o}" for i, o in enumerate(opts))
src, dst, kind = sys.argv[1:4]
if kind == "sft":
    rows = json.load(open(src))
    for r in rows:
        h = r["conversations"][0]["value"]; lines = h.split("\n")
        idx = [i for i, l in enumerate(lines) if len(l) > 3 and l[1:3] == ". " and l[0] in L]
        opts = [lines[i][3:] for i in idx]
        new, a = reorder(opts, r["conversations"][1]["value"].strip())
        for j, i in enumerate(idx): lines[i] = f"{L[j]}. {new[j]}"
        r["conversations"][0]["value"] = "\n".join(lines); r["conversations"][1]["value"] = a
    json.dump(rows, open(dst, "w"))
else:
    out = open(dst, "w")
    for line in open(src):
        r = json.loads(line); new, a = reorder(r["options"], r["answer"])
        r["problem"] = r["question"] + "\nOptions:\n" + opt_block(new); r["options"] = new; r["answer"] = a
        r["solution"] = f"<answer>{a}</answer>"; out.write(json.dumps(r) + "\n")
