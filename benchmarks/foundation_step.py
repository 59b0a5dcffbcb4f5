"""foundation_step: the two costly steps of `tinyvr foundation` (tiny model, fp32).

1. The language part's batch (32 rows of the shipped recipe's mix, configs/tiny/foundation.yaml:
   half induction rows, half look-ups, half of those option checks; ~15 to ~170 tokens).
2. The align part's video batch (16 clips with the recipe's align mix: a caption, or up to six
   grounded questions plus the clip's own question; ~50 to ~600 tokens plus 64 video tokens).

tinyvr: `sliced_backward`: the rows sorted by length and run as 4 slices, each
trimmed to its own longest row, every slice backwarding its share of the batch's mean token loss.
Baseline: the same batch as one right-padded tensor and one backward (what the recipe did before).
Both give the same gradient (checked here, and in tests/recipes/test_foundation.py).
"""

from __future__ import annotations

import benchlib as B

TARGET = 1.2
BATCH = 32
ALIGN_BATCH = 16


def _align(model, processor, items, repeats: int) -> dict:
    """The align part's video batch, sliced and padded, on the recipe file's align mix."""
    import random

    import torch

    from tinyvr.config import read_yaml
    from tinyvr.data.synthetic.grounding import grounded_questions
    from tinyvr.recipes.foundation import align_conversation, clip_pixels, foundation_config, sliced_backward

    cfg = foundation_config(read_yaml(B.ROOT / "configs" / "tiny" / "foundation.yaml"))
    model.train()
    with torch.no_grad():
        feats = model.vision_features(torch.stack([clip_pixels(c, processor)[0] for _, c in items]))
    grounded = [grounded_questions(c, processor.num_frames) for _, c in items]
    batches = []
    for r in range(repeats + 1):
        rng = random.Random(r)
        idx = [rng.randrange(len(items)) for _ in range(ALIGN_BATCH)]
        enc = [dict(zip(("input_ids", "labels"),
                        processor.encode_conversation(align_conversation(rng, items[i][0], grounded[i], cfg))))
               for i in idx]
        b = processor.collate(enc, padding_side="right")
        b["video_features"] = feats[idx]
        batches.append(b)

    def tinyvr(r):
        sliced_backward(model, batches[r])
        model.zero_grad(set_to_none=True)

    def padded(r):
        model(**batches[r]).loss.backward()
        model.zero_grad(set_to_none=True)

    times = B.interleaved({"tinyvr": tinyvr, "padded": padded}, repeats)
    res = {k: B.summary(v) for k, v in times.items()}
    for v in res.values():
        v.pop("results", None)
    video_tokens = model.config.num_queries  # spliced in place of each row's placeholder
    return {"ratio": res["padded"]["median_wall_s"] / res["tinyvr"]["median_wall_s"],
            "ratio_cpu_time": res["padded"]["median_cpu_s"] / res["tinyvr"]["median_cpu_s"],
            "tinyvr": res["tinyvr"], "baseline": res["padded"],
            "setup": {"batch": ALIGN_BATCH, "repeats": repeats,
                      "mean_tokens": sum(int(b["attention_mask"].sum()) + ALIGN_BATCH * (video_tokens - 1)
                                         for b in batches) / len(batches),
                      "mean_padded_positions": sum(b["attention_mask"].numel() + ALIGN_BATCH * (video_tokens - 1)
                                                   for b in batches) / len(batches)}}


def run(quick: bool = False) -> dict:
    import random

    torch = B.setup_torch(0)
    from tinyvr.recipes.foundation import foundation_items, language_batch, option_pool, sliced_backward

    repeats = 3 if quick else 7
    model, processor = B.tiny_model(0)
    lm = model.language_model.train()
    items = foundation_items(0, 40 if quick else 120)
    records = [r for r, _ in items]
    pool = option_pool(records)
    formats = ("which", "pool", "enum", "enum")
    batches = [language_batch(random.Random(i), records, processor.tokenizer, BATCH, 0.5, formats, pool)
               for i in range(repeats + 1)]

    def grads():
        g = [p.grad.clone() for p in lm.parameters()]
        lm.zero_grad(set_to_none=True)
        return g

    def tinyvr(r):
        sliced_backward(lm, batches[r], {"induction": [], "binding": [], "enum": []})
        lm.zero_grad(set_to_none=True)

    def padded(r):
        b = batches[r]
        lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        lm.zero_grad(set_to_none=True)

    b = batches[0]
    lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
    want = grads()
    sliced_backward(lm, b, {"induction": [], "binding": [], "enum": []})
    assert all(torch.allclose(x, y, atol=1e-5, rtol=1e-3) for x, y in zip(grads(), want)), "gradients differ"
    times = B.interleaved({"tinyvr": tinyvr, "padded": padded}, repeats)
    res = {k: B.summary(v) for k, v in times.items()}
    for v in res.values():
        v.pop("results", None)
    ratio = res["padded"]["median_wall_s"] / res["tinyvr"]["median_wall_s"]
    ratio_cpu = res["padded"]["median_cpu_s"] / res["tinyvr"]["median_cpu_s"]
    positions = sum(int(x["attention_mask"].numel()) for x in batches) / len(batches)
    tokens = sum(int(x["attention_mask"].sum()) for x in batches) / len(batches)
    video = _align(model, processor, items, repeats)
    print(f"foundation_step, language: batch {BATCH}, {tokens:.0f} tokens in {positions:.0f} padded positions: tinyvr "
          f"{res['tinyvr']['median_wall_s']:.2f} s/step, one padded batch {res['padded']['median_wall_s']:.2f} s/step "
          f"-> {ratio:.2f}x (target >= {TARGET}x; by CPU time {ratio_cpu:.2f}x)")
    print(f"foundation_step, align video batch of {ALIGN_BATCH} clips ({video['setup']['mean_tokens']:.0f} tokens in "
          f"{video['setup']['mean_padded_positions']:.0f} padded positions): tinyvr {video['tinyvr']['median_wall_s']:.2f} s, "
          f"one padded batch {video['baseline']['median_wall_s']:.2f} s -> {video['ratio']:.2f}x")
    return {"ratio": ratio, "target": TARGET, "align": video, "passed": ratio >= TARGET, "unit": "language training steps/s",
            "ratio_cpu_time": ratio_cpu, "tinyvr": res["tinyvr"], "baseline": res["padded"],
            "setup": {"batch": BATCH, "formats": list(formats), "induction_fraction": 0.5, "repeats": repeats,
                      "mean_tokens": tokens, "mean_padded_positions": positions}}
