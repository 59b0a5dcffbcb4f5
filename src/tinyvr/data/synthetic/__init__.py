"""tinyvr.data.synthetic: a procedural video-reasoning dataset rendered to real H.264 .mp4 files.

Clips of 1–3 flat shapes on a dark background (2–10 s, 16–80 frames, 7.5/8/10/12.5 fps) that
move, bounce off walls, collide, hide behind each other, appear, disappear and change colour,
with NextQA-like multiple-choice questions (descriptive, temporal, causal) whose answers are
checked to be visible in uniformly sampled frames, captions for pretraining and step-by-step
reasoning traces for the cold start.

    from tinyvr.data.synthetic import generate_dataset
    manifest = generate_dataset("data/synth", seed=0, sizes={"sft": 500}, workers=2)

No torch import here: generation runs in plain worker processes.
"""

from .questions import FAMILIES
from .render import decode_mp4, encode_mp4
from .scene import HELDOUT_COMBOS, PALETTE, SHAPES, sample_indices
from .verify import answer_from_frames
from .writer import (
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    HELDOUT_DEFINITION,
    SPLITS,
    format_problem,
    generate_dataset,
    generate_item,
    parse_sizes,
)

__all__ = [
    "DEFAULT_SIZES",
    "FAMILIES",
    "GENERATOR_VERSION",
    "HELDOUT_COMBOS",
    "HELDOUT_DEFINITION",
    "PALETTE",
    "SHAPES",
    "SPLITS",
    "answer_from_frames",
    "decode_mp4",
    "encode_mp4",
    "format_problem",
    "generate_dataset",
    "generate_item",
    "parse_sizes",
    "sample_indices",
]
