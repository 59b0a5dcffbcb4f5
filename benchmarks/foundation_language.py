"""foundation_language: one training step of the foundation's language part (tiny LLM, batch 32).

tinyvr: `language_backward`: the batch's rows sorted by length and run as 4 slices, each trimmed to
its own longest row, every slice backwarding its share of the batch's mean token loss.
Baseline: the same batch as one right-padded tensor through `lm(..., labels=...)` and one backward
(what the language part did before). Both give the same gradient (checked here, and in
tests/recipes/test_foundation.py); the mix is the shipped recipe's (configs/tiny/foundation.yaml:
half induction rows, half look-ups, half of those option checks), whose rows range from ~15 to
~170 tokens, so one padded batch is about half padding.
"""

from __future__ import annotations

import benchlib as B

TARGET = 1.2
BATCH = 32


def run(quick: bool = False) -> dict:
    import random

    torch = B.setup_torch(0)
    from tinyvr.recipes.foundation import (foundation_items, language_backward, language_batch, option_pool)

    repeats = 3 if quick else 7
    model, processor = B.tiny_model(0)
    lm = model.language_model.train()
    records = [r for r, _ in foundation_items(0, 40 if quick else 120)]
    pool = option_pool(records)
    formats = ("which", "pool", "enum", "enum")
    batches = [language_batch(random.Random(i), records, processor.tokenizer, BATCH, 0.5, formats, pool)
               for i in range(repeats + 1)]

    def grads():
        g = [p.grad.clone() for p in lm.parameters()]
        lm.zero_grad(set_to_none=True)
        return g

    def tinyvr(r):
        language_backward(lm, batches[r], {"induction": [], "binding": [], "enum": []})
        lm.zero_grad(set_to_none=True)

    def padded(r):
        b = batches[r]
        lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        lm.zero_grad(set_to_none=True)

    b = batches[0]
    lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
    want = grads()
    language_backward(lm, b, {"induction": [], "binding": [], "enum": []})
    assert all(torch.allclose(x, y, atol=1e-5, rtol=1e-3) for x, y in zip(grads(), want)), "gradients differ"
    times = B.interleaved({"tinyvr": tinyvr, "padded": padded}, repeats)
    res = {k: B.summary(v) for k, v in times.items()}
    for v in res.values():
        v.pop("results", None)
    ratio = res["padded"]["median_wall_s"] / res["tinyvr"]["median_wall_s"]
    ratio_cpu = res["padded"]["median_cpu_s"] / res["tinyvr"]["median_cpu_s"]
    positions = sum(int(x["attention_mask"].numel()) for x in batches) / len(batches)
    tokens = sum(int(x["attention_mask"].sum()) for x in batches) / len(batches)
    print(f"foundation_language: batch {BATCH}, {tokens:.0f} tokens in {positions:.0f} padded positions: tinyvr "
          f"{res['tinyvr']['median_wall_s']:.2f} s/step, one padded batch {res['padded']['median_wall_s']:.2f} s/step "
          f"-> {ratio:.2f}x (target >= {TARGET}x; by CPU time {ratio_cpu:.2f}x)")
    return {"ratio": ratio, "target": TARGET, "passed": ratio >= TARGET, "unit": "training steps/s",
            "ratio_cpu_time": ratio_cpu, "tinyvr": res["tinyvr"], "baseline": res["padded"],
            "setup": {"batch": BATCH, "formats": list(formats), "induction_fraction": 0.5, "repeats": repeats,
                      "mean_tokens": tokens, "mean_padded_positions": positions}}
