"""Can connector + LLM learn the QA families at all, given many items and steps? (upper bound)

qa_scale.py prep  MODEL_DIR OUT N [START]      items of the foundation split, frozen-tower features
qa_scale.py train MODEL_DIR OUT VAL_JSONL STEPS LR THREADS [real|alpha] [BATCH]
Tower frozen. Every 250 steps: option accuracy per family on VAL_JSONL (teacher-forced letter
argmax over A-E at the answer position), and the letters predicted. Mode text: the answer's
text without options; each option's text scored by likelihood (perception without binding).
"""
import collections, json, sys, time
import torch
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import spliced_labels  # before 2026-12-02 qa_scale.py read unspliced positions (tiny-study item 16)
from tinyvr.data.feature_cache import VideoInputs
from tinyvr.data.synthetic.writer import format_problem
from tinyvr.data.template import OPTION_SUFFIX

L = "ABCDE"
cmd, mdir, out = sys.argv[1], sys.argv[2], sys.argv[3]

if cmd == "prep":  # generate in worker processes before torch starts its thread pool (fork-safe)
    import numpy as np
    from multiprocessing import Pool
    from tinyvr.data.synthetic.scene import sample_indices
    from tinyvr.data.synthetic.writer import generate_item
    n, start = int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 10000

    def one(i):
        r, cand = generate_item(0, "foundation", i)
        ids = sample_indices(cand.scene.num_frames, 8)
        return r, np.stack([cand.view.frame(int(t)) for t in ids])

    t0 = time.time()
    with Pool(2) as pool:
        got = pool.map(one, range(start, start + n), chunksize=32)
    print("items", len(got), f"{time.time()-t0:.0f}s", flush=True)
    model, proc = load_model(mdir)
    assert proc.num_frames == 8
    torch.set_num_threads(2)
    with torch.no_grad():
        feats = torch.cat([model.vision_features(torch.stack([proc.frames_to_pixel_values(f) for _, f in got[i:i + 64]]))
                           for i in range(0, n, 64)])
    recs = [{k: r[k] for k in ("family", "question", "options", "answer")} for r, _ in got]
    torch.save({"feats": feats.half(), "recs": recs}, out)
    print("features", tuple(feats.shape), f"{time.time()-t0:.0f}s", flush=True)
    sys.exit()

model, proc = load_model(mdir)
model.requires_grad_(False)
val_file, steps, lr, threads = sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
mode = sys.argv[8] if len(sys.argv) > 8 else "real"
bs = int(sys.argv[9]) if len(sys.argv) > 9 else 16
torch.set_num_threads(threads); torch.manual_seed(0)
d = torch.load(out, weights_only=False)
feats, recs = d["feats"], d["recs"]


def conv(question, options, answer):
    if mode == "text":  # perception without binding: the answer's text, no options in the prompt
        return [{"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": options[L.index(answer)]}]
    if mode == "alpha":
        tgt = options[L.index(answer)]; options = sorted(options); answer = L[options.index(tgt)]
    return [{"from": "human", "value": f"<image>\n{format_problem(question, options)}\n{OPTION_SUFFIX}"},
            {"from": "gpt", "value": answer}]


enc = [dict(zip(("input_ids", "labels"), proc.encode_conversation(conv(r["question"], r["options"], r["answer"]))))
       for r in recs]
val = [json.loads(x) for x in open(val_file)]
vi = VideoInputs(model, proc)
root = val_file.rsplit("/", 1)[0]
vfeats = torch.cat([vi([f"{root}/{r['video_filename']}"])["video_features"] for r in val])
venc = [dict(zip(("input_ids", "labels"), proc.encode_conversation(conv(r["question"], r["options"], r["answer"]))))
        for r in val]
# the answer token as SFT supervises it (" A" after "ASSISTANT:", not the bare letter)
letter_ids = [next(t for t, lab in zip(*proc.encode_conversation(conv("Q?", list("vwxyz"), c))) if lab != -100)
              for c in L] if mode != "text" else None
print("letters", letter_ids, "train", len(enc), "val", len(val), flush=True)


def batch(encs, f):
    b = proc.collate(encs, padding_side="right")
    b["video_features"] = f.float()
    return b


def evaluate_text(shift=0):
    """Each option's text scored by its summed log-likelihood as the answer; the best one is the pick.
    shift=1: every item gets the next item's video (the text prior's accuracy)."""
    model.eval(); fam = collections.defaultdict(list); right = 0
    with torch.no_grad():
        for r, f in zip(val, vfeats.roll(shift, 0)):
            encs = [dict(zip(("input_ids", "labels"), proc.encode_conversation(conv(r["question"], r["options"], c))))
                    for c in L[:len(r["options"])]]
            b = batch(encs, f.unsqueeze(0).expand(len(encs), -1, -1))
            lab = spliced_labels(model, b, b.pop("labels"))
            logp = model(**b).logits[:, :-1].log_softmax(-1)
            tgt = lab[:, 1:]
            ll = (logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)).sum(1)
            ok = L[int(ll.argmax())] == r["answer"]
            fam[r["family"]].append(ok); right += ok
    model.train()
    return f"acc {100 * right / len(val):.1f} {dict((k, round(100 * sum(v) / len(v))) for k, v in sorted(fam.items()))}"


def evaluate():
    if mode == "text":
        return evaluate_text() + " | other video: " + evaluate_text(1)
    model.eval(); preds = []
    with torch.no_grad():
        for i in range(0, len(val), 50):
            b = batch(venc[i:i + 50], vfeats[i:i + 50])
            lab = spliced_labels(model, b, b.pop("labels"))
            logits = model(**b).logits
            pos = (lab != -100).float().argmax(1) - 1  # position predicting the first answer token
            lg = logits[torch.arange(len(pos)), pos][:, letter_ids]
            preds += [L[j] for j in lg.argmax(-1).tolist()]
    model.train()
    gold = [conv(r["question"], r["options"], r["answer"])[1]["value"] for r in val]
    fam = collections.defaultdict(list)
    for r, p, g in zip(val, preds, gold):
        fam[r["family"]].append(p == g)
    per = {k: round(100 * sum(v) / len(v)) for k, v in sorted(fam.items())}
    acc = 100 * sum(p == g for p, g in zip(preds, gold)) / len(gold)
    return f"acc {acc:.1f} {per} letters {dict(sorted(collections.Counter(preds).items()))}"


model.connector.requires_grad_(True); model.language_model.requires_grad_(True); model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
g = torch.Generator().manual_seed(0)
t0 = time.time(); run = []
print("step 0", evaluate(), flush=True)
for step in range(steps):
    idx = torch.randint(len(enc), (bs,), generator=g).tolist()
    o = model(**batch([enc[i] for i in idx], feats[idx]))
    o.loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); opt.zero_grad()
    run.append(o.loss.item())
    if (step + 1) % 250 == 0:
        print(f"step {step+1} train {sum(run[-250:])/250:.3f} {evaluate()} {time.time()-t0:.0f}s", flush=True)
