"""Option mode against reason mode, item by item: is a one-letter answer wrong because the model
does not know the answer, or because it cannot look up the letter of an answer it knows?

Reads two `predictions.jsonl` of one model on one split (the demo writes them under
`runs/<demo>/eval/<stage>/<split>-option/` and `.../<split>-reason/`) and prints, per question
family and overall, the option-mode accuracy on the items the reason mode got right and on those it
got wrong, with the counts. Arguments: option predictions, reason predictions.
"""

import collections
import json
import sys


def load(path: str) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, open(path, encoding="utf-8"))}


def main(option_path: str, reason_path: str) -> None:
    opt, rea = load(option_path), load(reason_path)
    ids = sorted(set(opt) & set(rea))
    table = collections.defaultdict(lambda: collections.Counter())
    for i in ids:
        fam = (rea[i].get("category") or {}).get("family", "?")
        key = ("reason_right" if rea[i]["correct"] else "reason_wrong", opt[i]["correct"])
        for f in (fam, "ALL"):
            table[f][key] += 1
    print(f"{len(ids)} items in both files")
    print(f"{'family':12s} {'reason right: n, option acc':>28s} {'reason wrong: n, option acc':>28s}")
    for fam in sorted(table, key=lambda f: (f == "ALL", f)):
        c = table[fam]
        cells = []
        for r in ("reason_right", "reason_wrong"):
            n = c[(r, True)] + c[(r, False)]
            cells.append(f"{n:4d}, {c[(r, True)] / n:5.2f}" if n else f"{0:4d},    - ")
        print(f"{fam:12s} {cells[0]:>28s} {cells[1]:>28s}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
