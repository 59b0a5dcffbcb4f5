"""`tinyvr validate`: every check a recipe makes before training, without training.

Config errors (unknown keys, wrong types, out-of-range values, unknown rewards) and data errors
(missing files, malformed rows, undecodable videos) are found here, up front, and named by file,
row and field. `preflight(cfg)` is the cheap part (no video decoding) that a recipe can run first;
`validate_run` adds one decode of every training video.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyvr.config import TrainConfig, load_config
from tinyvr.errors import ConfigError, DataError

MAX_LISTED = 20  # bad rows / videos named in a report


def check_data(path: str | Path, video_root: str | Path, *, allow_outside_root: bool = False,
               num_frames: int = 8, decode: bool = True, kind: str | None = None,
               families: list[str] | None = None, family_probe: bool = False) -> dict:
    """Read a data file and optionally decode every video once.

    kind "grpo" (jsonl rows) or "conversation" (LLaVA json); None picks by the file's suffix.
    `families` (grpo): keep the rows of those families, as `data.families` makes the recipe do;
    `family_probe` (grpo): every row needs a `family` column, as `data.family_probe` does.
    Returns {"file", "rows", "bad_rows": [DataError], "bad_videos": [VideoDecodeError]}.
    """
    from tinyvr.data.datasets import load_conversation_json, load_grpo_jsonl, select_families
    from tinyvr.data.video import read_video
    from tinyvr.errors import VideoDecodeError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "data file not found" if not path.exists() else "not a file")
    if kind is None:
        kind = "grpo" if path.suffix == ".jsonl" else "conversation"
    loader = load_grpo_jsonl if kind == "grpo" else load_conversation_json
    rows, bad = loader(path, video_root, allow_outside_root=allow_outside_root)
    if kind == "grpo":
        rows = select_families(rows, families or [], path)
        if family_probe and (no := next((r for r in rows if "family" not in r.columns), None)):
            raise ConfigError(f"data.family_probe: line {no.index + 1} of {path} has no 'family' column")
    bad_videos = []
    if decode:
        for row in rows:
            try:
                read_video(row.video_path, num_frames)
            except VideoDecodeError as e:
                bad_videos.append(e)
    return {"file": str(path), "rows": len(rows), "bad_rows": bad, "bad_videos": bad_videos}


def _num_frames(cfg: TrainConfig) -> int:
    """Frames the run will sample: the config's, else the starting model's, else 8."""
    if cfg.model.num_frames:
        return cfg.model.num_frames
    proc = Path(cfg.model.init_from) / "processor_config.json" if cfg.model.init_from else None
    if proc is not None and proc.is_file():
        try:
            n = json.loads(proc.read_text()).get("num_frames")
            if isinstance(n, int) and n > 0:
                return n
        except (ValueError, OSError):
            pass
    return 8


def _judge(r: dict, max_bad_fraction: float, what: str) -> list[str]:
    """Report lines for one data file; DataError when its bad share passes `max_bad_fraction`."""
    errors = r["bad_rows"] + r["bad_videos"]
    total = r["rows"] + len(r["bad_rows"])
    lines = [f"{what} {r['file']}: {r['rows']} rows read, {len(r['bad_rows'])} malformed, "
             f"{len(r['bad_videos'])} undecodable videos"]
    lines += [f"  {e}" for e in errors[:MAX_LISTED]]
    if len(errors) > MAX_LISTED:
        lines.append(f"  ... and {len(errors) - MAX_LISTED} more")
    if total == 0 or r["rows"] == len(r["bad_videos"]):
        raise DataError(r["file"], "no usable rows\n" + "\n".join(lines[1:]))
    if errors and len(errors) / total > max_bad_fraction:
        raise DataError(r["file"], f"{len(errors)} of {total} samples are bad ({len(errors) / total:.1%}), "
                                   f"more than data.max_bad_fraction={max_bad_fraction}\n"
                        + "\n".join(lines[1:]))
    return lines


def preflight(cfg: TrainConfig, *, data: str | Path | None = None, decode: bool = False) -> list[str]:
    """Every up-front check of a run (starting model, rewards, data files); report lines.

    Raises ConfigError / CheckpointError / DataError naming the field, file or row at fault. With
    `decode` every training video is decoded once (what `tinyvr validate` does).
    """
    lines = [f"config: ok (stage {cfg.stage})"]
    if cfg.model.init_from:
        from tinyvr.recipes.common import check_model_folder

        check_model_folder(cfg.model.init_from, "model.init_from")
        lines.append(f"model {cfg.model.init_from}: ok")
    if cfg.stage == "grpo":  # user rewards are imported here because the config names them
        from tinyvr.rl.rewards import get_reward_fn

        for where, name in [("rl.reward", cfg.rl.reward)] + [
                (f"rl.extra_rewards[{i}]", n) for i, n in enumerate(cfg.rl.extra_rewards)]:
            try:
                get_reward_fn(name)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
    train_file = data or cfg.data.train_file
    if not train_file:
        raise ConfigError("data.train_file: not set (the stage has nothing to train on)")
    if cfg.data.video_root and not Path(cfg.data.video_root).is_dir():
        raise ConfigError(f"data.video_root: {cfg.data.video_root} is not a folder")
    kind = "grpo" if cfg.stage == "grpo" else "conversation"  # the loader the recipe will use
    frames = _num_frames(cfg)
    r = check_data(train_file, cfg.data.video_root, allow_outside_root=cfg.data.allow_outside_root,
                   num_frames=frames, decode=decode, kind=kind, families=cfg.data.families,
                   family_probe=cfg.data.family_probe > 0)
    lines += _judge(r, cfg.data.max_bad_fraction, "data")
    if cfg.data.eval_file:  # read as the end-of-stage check will read it (strict; root = its folder)
        from tinyvr.eval.tasks import get_task

        eval_file = Path(cfg.data.eval_file)
        if not eval_file.is_file():
            raise DataError(eval_file, "data.eval_file: file not found")
        items = get_task("synthetic").load(eval_file.parent, split=eval_file.stem,
                                           limit=cfg.data.eval_limit or None)
        lines.append(f"eval {eval_file}: {len(items)} items ok")
    return lines


def validate_run(config: str, overrides: list[str], data: str | None = None, *, decode: bool = True) -> str:
    """`tinyvr validate`: load the config (every field checked), then `preflight` with decoding."""
    cfg = load_config(config, overrides)
    return "\n".join([f"config {config}: ok (stage {cfg.stage})"] + preflight(cfg, data=data, decode=decode)[1:])


__all__ = ["check_data", "preflight", "validate_run"]
