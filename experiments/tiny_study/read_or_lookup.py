"""Split reason-mode answers into reading and look-up: was the answer the thinking states the right
option's text, and did the option check mark the option that carries that text?

read_or_lookup.py PREDICTIONS.jsonl ITEMS.jsonl   (an evaluation's predictions and the split's items)
"""
import json, re, sys, collections
P = sys.argv[1]
items = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[2])}
stat = collections.Counter(); fam = collections.defaultdict(collections.Counter)
for l in open(P):
    r = json.loads(l); it = items[r["id"]]; f = r["category"]["family"]
    m = re.search(r"The answer is (.*?)\.\n", r["output"])
    y = re.search(r"\n([A-E])\. (.*?): yes", r["output"])
    if not m or not y:
        stat["no check"] += 1; continue
    stated, letter, text = m.group(1), y.group(1), y.group(2)
    gold_text = it["options"]["ABCDE".index(r["gt"])]
    in_opts = stated in it["options"]
    right_read = stated == gold_text
    lookup_ok = in_opts and it["options"]["ABCDE".index(letter)] == stated if letter in "ABCDE"[:len(it["options"])] else False
    k = ("read right" if right_read else "read wrong") + (", look-up right" if lookup_ok else ", look-up wrong" if in_opts else ", not an option")
    stat[k] += 1; fam[f][k] += 1
print(dict(stat))
for f, c in fam.items(): print(f, dict(c))
