"""The align part's held-out clips of a foundation, read once: shared by where_eval.py and logit_lens.py."""
import torch

from tinyvr.data.synthetic.grounding import grounded_questions
from tinyvr.recipes.common import load_model
from tinyvr.recipes.foundation import clip_pixels, foundation_items


def held_out_clips(argv: list[str]):
    """argv: MODEL_DIR [N] [THREADS]. Returns (model, processor, n, the N clips' tower features,
    their grounded questions); the first N (default 200) foundation items are the align part's
    held-out clips."""
    n = int(argv[1]) if len(argv) > 1 else 200
    torch.set_num_threads(int(argv[2]) if len(argv) > 2 else 1)
    model, proc = load_model(argv[0])
    model.eval()
    items = foundation_items(0, n)
    with torch.no_grad():
        feats = torch.cat([model.vision_features(torch.stack([clip_pixels(c, proc)[0] for _, c in items[i:i + 32]]))
                           for i in range(0, n, 32)])
    return model, proc, n, feats, [grounded_questions(c, proc.num_frames) for _, c in items]
