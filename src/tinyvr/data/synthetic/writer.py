"""Generate a whole synthetic dataset: items, .mp4 files, reference-format json/jsonl, manifest.

Every item is a pure function of (seed, split, index, frame_size): its RNG stream is
`np.random.default_rng([seed, crc32(split), 0, index])`, its family is FAMILIES[index % 8] and
its answer letter comes from a permutation of A..E drawn per block of 5 items, so letters are
balanced within every split and the output is the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...utils.hashing import file_sha256
from ..template import OPTION_SUFFIX, REASON_SUFFIX, checked_thinking, reasoned_answer
from .captions import PRETRAIN_PROMPTS, caption
from .questions import FAMILIES, Candidate, Ctx, build_candidate
from .render import X264_OPTIONS, encode_mp4
from .scene import (
    FPS_CHOICES,
    HELDOUT_COMBOS,
    MAX_FRAMES,
    MAX_SECONDS,
    MIN_FRAMES,
    MIN_SECONDS,
    VERIFY_NUM_FRAMES,
)

GENERATOR_VERSION = "tinyvr-synthetic-4"  # 4: traces end with the option check
SPLITS: tuple[str, ...] = ("pretrain", "sft", "rl", "test", "test_heldout", "coldstart")
# Sized for the tiny recipe (configs/tiny/): SFT's option mode grows with the answers it sees, and
# GRPO's 400 steps of 4 prompts from the families it keeps need 2,600 (about 10 min with 2 workers,
# 0.8 GB); `tinyvr demo` draws smaller splits for its quick runs. Every split can be resized.
DEFAULT_SIZES: dict[str, int] = {
    "pretrain": 1000,
    "sft": 72000,
    "rl": 2600,
    "test": 200,
    "test_heldout": 200,
    "coldstart": 16,
}
LETTERS = "ABCDE"
NUM_OPTIONS = 5

HELDOUT_DEFINITION = {
    "combos": [{"colour": c, "shape": s} for c, s in HELDOUT_COMBOS],
    "rule": (
        "No object in any frame of the pretrain, sft, rl, coldstart or test splits ever shows one of these "
        "colour x shape combinations (colour changes included), and no text of those splits names one. "
        "In test_heldout the object each question is about starts with one of them: the object named in "
        "the question, or given by the correct option (order, compare), or one of the counted objects "
        "(count: how many objects); other objects are unrestricted. Clip lengths, frame rates and "
        "families are distributed as in the other splits."
    ),
}


def split_code(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split_code(split), 0, index])


def family_for(split: str, index: int) -> str:
    return FAMILIES[index % len(FAMILIES)]


def letter_for(seed: int, split: str, index: int) -> int:
    perm = np.random.default_rng([seed, split_code(split), 1, index // NUM_OPTIONS]).permutation(NUM_OPTIONS)
    return int(perm[index % NUM_OPTIONS])


def item_id(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def format_problem(question: str, options: list[str]) -> str:
    return question + "\nOptions:\n" + "\n".join(f"{LETTERS[k]}. {o}" for k, o in enumerate(options))


def _options(rng: np.random.Generator, answer: str, distractors: list[str], letter: int) -> list[str]:
    wrong = [d for d in dict.fromkeys(distractors) if d != answer][: NUM_OPTIONS - 1]
    if len(wrong) < NUM_OPTIONS - 1:  # pragma: no cover - every family supplies enough
        raise RuntimeError(f"not enough distractors for {answer!r}: {distractors}")
    wrong = [wrong[int(j)] for j in rng.permutation(len(wrong))]
    return wrong[:letter] + [answer] + wrong[letter:]


def _reasoning(rng: np.random.Generator, cand: Candidate, options: list[str], answer: int) -> str:
    """The cold start's thinking: the scene's evidence (sometimes a re-check), the answer's text
    stated, then the option check that finds its letter line by line (`option_check`)."""
    parts = list(cand.qa.evidence)
    if cand.qa.check and rng.random() < 0.3:
        parts.append(cand.qa.check)
    return checked_thinking(options, answer, " ".join(parts))


def generate_item(seed: int, split: str, index: int, frame_size: int = 64) -> tuple[dict, Candidate]:
    """One item in memory: its record (question, options, answer, caption, reasoning, ...) and scene."""
    rng = item_rng(seed, split, index)
    family = family_for(split, index)
    ctx = Ctx(frame_size=frame_size, heldout=(split == "test_heldout"))
    cand, attempts = build_candidate(rng, family, ctx)
    letter_idx = letter_for(seed, split, index)
    options = _options(rng, cand.qa.answer, cand.qa.distractors, letter_idx)
    letter = LETTERS[letter_idx]
    sc = cand.scene
    record = {
        "id": item_id(split, index),
        "split": split,
        "family": family,
        "subtype": cand.qa.subtype,
        "question": cand.qa.question,
        "options": options,
        "answer": letter,
        "answer_text": cand.qa.answer,
        "reasoning": _reasoning(rng, cand, options, letter_idx),
        "caption": caption(rng, sc, cand.track, cand.view),
        "prompt": PRETRAIN_PROMPTS[int(rng.integers(len(PRETRAIN_PROMPTS)))],
        "num_frames": sc.num_frames,
        "fps": float(sc.fps),
        "frame_size": sc.frame_size,
        "attempts": attempts,
        "video": f"videos/{split}/{item_id(split, index)}.mp4",
    }
    return record, cand


def _work(task: tuple[int, str, int, int, str]) -> dict:
    seed, split, index, frame_size, out_dir = task
    record, cand = generate_item(seed, split, index, frame_size)
    data = encode_mp4(cand.view.frames(), cand.scene.fps)
    path = Path(out_dir) / record["video"]
    path.write_bytes(data)
    record["sha256"] = hashlib.sha256(data).hexdigest()
    return record


# ----------------------------------------------------------------------------------------------
# options


def _check_count(option: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{option}: count for '{key}' must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ConfigError(f"{option}: count for '{key}' must be >= 0, got {value}")
    return int(value)


def parse_sizes(text: str) -> dict[str, int]:
    """'pretrain=800,sft=2000' -> {'pretrain': 800, 'sft': 2000}; ConfigError on bad input."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"sizes: expected 'split=count,...' with splits {', '.join(SPLITS)}, got {text!r}")
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not key:
            raise ConfigError(f"sizes: '{part}' is not 'split=count' (splits: {', '.join(SPLITS)})")
        if key not in SPLITS:
            raise ConfigError(f"sizes: unknown split '{key}' (allowed: {', '.join(SPLITS)})")
        try:
            n = int(val)
        except ValueError:
            raise ConfigError(f"sizes: count for '{key}' must be an integer >= 0, got {val!r}") from None
        out[key] = _check_count("sizes", key, n)
    return out


def resolve_sizes(sizes: dict[str, int] | None, coldstart_size: int = 16) -> dict[str, int]:
    """Defaults, overridden by `coldstart_size`, then by `sizes` (which may name any split)."""
    out = dict(DEFAULT_SIZES)
    out["coldstart"] = _check_count("coldstart_size", "coldstart", coldstart_size)
    if sizes is None:
        return out
    if not isinstance(sizes, dict):
        raise ConfigError(f"sizes: expected a dict split -> count, got {type(sizes).__name__}")
    for key, val in sizes.items():
        if key not in SPLITS:
            raise ConfigError(f"sizes: unknown split '{key}' (allowed: {', '.join(SPLITS)})")
        out[key] = _check_count("sizes", key, val)
    return out


def check_frame_size(frame_size) -> int:
    if isinstance(frame_size, bool) or not isinstance(frame_size, (int, np.integer)):
        raise ConfigError(f"frame_size: must be an even integer in [32, 512], got {frame_size!r}")
    if frame_size % 2 or not 32 <= frame_size <= 512:
        raise ConfigError(f"frame_size: must be an even integer in [32, 512], got {frame_size}")
    return int(frame_size)


# ----------------------------------------------------------------------------------------------
# dataset


def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _llava(rec: dict, human: str, gpt: str, **extra) -> dict:
    row = {
        "id": rec["id"],
        "video": rec["video"],
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
    }
    row.update(extra)
    return row


def _grpo(rec: dict) -> dict:
    return {
        "problem": format_problem(rec["question"], rec["options"]),
        "solution": f"<answer>{rec['answer']}</answer>",
        "video_filename": "./" + rec["video"],
        "id": rec["id"],
        "family": rec["family"],
        "subtype": rec["subtype"],
        "question": rec["question"],
        "options": rec["options"],
        "answer": rec["answer"],
        "num_frames": rec["num_frames"],
        "fps": rec["fps"],
        "reasoning": rec["reasoning"],
    }


def coldstart_filename(n: int) -> str:
    return f"coldstart-{n}.json"


def generate_dataset(
    out_dir,
    *,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    workers: int | None = None,
    frame_size: int = 64,
    progress: bool = True,
    coldstart_size: int = 16,
) -> dict:
    """Write the synthetic dataset to `out_dir` and return its manifest (also `manifest.json`).

    Layout: videos/<split>/<id>.mp4, pretrain.json (captions), sft.json (letter answers),
    coldstart-<n>.json (reasoning traces), rl.jsonl / test.jsonl / test_heldout.jsonl (GRPO format),
    manifest.json (counts, held-out definition, sha256 of every file). Same arguments => same bytes,
    for any number of workers.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be an integer >= 0, got {seed!r}")
    frame_size = check_frame_size(frame_size)
    all_sizes = resolve_sizes(sizes, coldstart_size)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers: must be an integer >= 1, got {workers!r}")
    out = Path(out_dir)
    tasks = []
    for split in SPLITS:
        vdir = out / "videos" / split
        vdir.mkdir(parents=True, exist_ok=True)
        keep = {f"{item_id(split, i)}.mp4" for i in range(all_sizes[split])}
        for old in vdir.glob("*.mp4"):  # leftovers of an earlier, larger generation
            if old.name not in keep:
                old.unlink()
        tasks += [(int(seed), split, i, frame_size, str(out)) for i in range(all_sizes[split])]

    records: list[dict] = []
    pool = None
    if workers > 1 and len(tasks) > 1:
        # fork on Linux: workers only run numpy + PyAV (no torch), and callers' scripts need no
        # `if __name__ == "__main__"` guard; spawn elsewhere (fork is unsafe on macOS).
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = mp.get_context(method).Pool(min(workers, len(tasks)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="synthetic videos", unit="video")
    try:
        if pool is None:
            results = map(_work, tasks)
        else:
            chunk = max(1, min(16, math.ceil(len(tasks) / (workers * 8))))
            results = pool.imap(_work, tasks, chunksize=chunk)
        for rec in results:
            records.append(rec)
            if bar is not None:
                bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()

    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec in records:
        by_split[rec["split"]].append(rec)

    files: dict[str, str] = {}
    for rec in records:
        files[rec["video"]] = rec.pop("sha256")

    _dump_json(
        out / "pretrain.json", [_llava(r, f"<image>\n{r['prompt']}", r["caption"]) for r in by_split["pretrain"]]
    )
    _dump_json(
        out / "sft.json",
        [
            _llava(
                r,
                f"<image>\n{format_problem(r['question'], r['options'])}\n{OPTION_SUFFIX}",
                r["answer"],
                family=r["family"],
                answer=r["answer"],
            )
            for r in by_split["sft"]
        ],
    )
    cold_name = coldstart_filename(all_sizes["coldstart"])
    for old in out.glob("coldstart-*.json"):
        if old.name != cold_name:
            old.unlink()
    _dump_json(
        out / cold_name,
        [
            _llava(
                r,
                f"<image>\n{format_problem(r['question'], r['options'])} {REASON_SUFFIX}",
                reasoned_answer(r["reasoning"], r["answer"]),
                family=r["family"],
                answer=r["answer"],
            )
            for r in by_split["coldstart"]
        ],
    )
    for split in ("rl", "test", "test_heldout"):
        _dump_jsonl(out / f"{split}.jsonl", [_grpo(r) for r in by_split[split]])
    for fname in ("pretrain.json", "sft.json", cold_name, "rl.jsonl", "test.jsonl", "test_heldout.jsonl"):
        files[fname] = file_sha256(out / fname)

    def tally(split: str, key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in by_split[split]:
            counts[r[key]] = counts.get(r[key], 0) + 1
        return dict(sorted(counts.items()))

    manifest = {
        "generator": GENERATOR_VERSION,
        "seed": int(seed),
        "frame_size": frame_size,
        "sizes": all_sizes,
        "counts": {s: len(by_split[s]) for s in SPLITS},
        "families": {s: tally(s, "family") for s in SPLITS},
        "answer_letters": {s: tally(s, "answer") for s in SPLITS if s != "pretrain"},
        "files_by_split": {
            "pretrain": "pretrain.json",
            "sft": "sft.json",
            "coldstart": cold_name,
            "rl": "rl.jsonl",
            "test": "test.jsonl",
            "test_heldout": "test_heldout.jsonl",
        },
        "heldout": HELDOUT_DEFINITION,
        "video": {
            "codec": "h264",
            "pix_fmt": "yuv420p",
            "container": "mp4",
            "x264": dict(X264_OPTIONS),
            "fps_choices": list(FPS_CHOICES),
            "frames": [MIN_FRAMES, MAX_FRAMES],
            "seconds": [MIN_SECONDS, MAX_SECONDS],
        },
        "verified_num_frames": list(VERIFY_NUM_FRAMES),
        "families_list": list(FAMILIES),
        "files": dict(sorted(files.items())),
    }
    _dump_json(out / "manifest.json", manifest)
    return manifest
