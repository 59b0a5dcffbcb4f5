"""`tinyvr validate`: every check a recipe makes before training, without training.

Config errors (unknown keys, wrong types, out-of-range values) and data errors (missing files,
malformed rows, undecodable videos) are found here, up front, and named by file, row and field.
"""

from __future__ import annotations

from pathlib import Path

from tinyvr.config import load_config
from tinyvr.errors import DataError


def check_data(path: str | Path, video_root: str | Path, *, allow_outside_root: bool = False,
               num_frames: int = 8, decode: bool = True) -> dict:
    """Read a data file (GRPO jsonl or LLaVA json) and optionally decode every video once."""
    from tinyvr.data.datasets import load_conversation_json, load_grpo_jsonl
    from tinyvr.data.video import read_video
    from tinyvr.errors import VideoDecodeError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "data file not found")
    loader = load_grpo_jsonl if path.suffix == ".jsonl" else load_conversation_json
    rows, bad = loader(path, video_root, allow_outside_root=allow_outside_root)
    bad_videos = []
    if decode:
        for row in rows:
            try:
                read_video(row.video_path, num_frames)
            except VideoDecodeError as e:
                bad_videos.append(e)
    return {"file": str(path), "rows": len(rows), "bad_rows": bad, "bad_videos": bad_videos}


def validate_run(config: str, overrides: list[str], data: str | None = None) -> str:
    cfg = load_config(config, overrides)
    lines = [f"config {config}: ok (stage {cfg.stage})"]
    train_file = data or cfg.data.train_file
    if train_file:
        frames = cfg.model.num_frames or 8
        r = check_data(train_file, cfg.data.video_root, allow_outside_root=cfg.data.allow_outside_root,
                       num_frames=frames)
        n_bad = len(r["bad_rows"]) + len(r["bad_videos"])
        total = r["rows"] + len(r["bad_rows"])
        lines.append(f"data {r['file']}: {r['rows']} rows read, {len(r['bad_rows'])} malformed, "
                     f"{len(r['bad_videos'])} undecodable videos")
        lines += [f"  {e}" for e in (r["bad_rows"] + r["bad_videos"])[:20]]
        if total and n_bad / total > cfg.data.max_bad_fraction:
            raise DataError(r["file"], f"{n_bad}/{total} bad samples exceed data.max_bad_fraction="
                            f"{cfg.data.max_bad_fraction}:\n" + "\n".join(lines))
    if cfg.model.init_from and not (Path(cfg.model.init_from) / "config.json").is_file():
        from tinyvr.errors import CheckpointError

        raise CheckpointError(f"model.init_from: {cfg.model.init_from} is not a model folder (no config.json)")
    return "\n".join(lines)
