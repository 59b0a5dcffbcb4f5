"""Video-MME (without subtitles), read from the released Hugging Face layout.

    DATA_ROOT/videomme/test-00000-of-00001.parquet   one row per question: videoID, duration
                                                     (short|medium|long), question, options
                                                     (["A. …", "B. …", …]), answer (letter),
                                                     question_id, domain, sub_category, task_type
    DATA_ROOT/data/{videoID}.mp4

Reading the parquet needs `pyarrow` (or `pandas` with a parquet engine). Without one, the same table
is accepted beside it as `test-00000-of-00001.jsonl` / `.json` (list of row objects) / `.csv`
(`options` as a JSON list string).

Score: per-duration accuracy; `Avg` = mean of the duration accuracies present (the paper's "wo sub"
overall: 900 questions per duration, so it also equals the micro average on the full set);
`micro` = correct / total.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from tinyvr.errors import ConfigError
from tinyvr.eval import metrics
from tinyvr.eval.tasks.base import (
    EvalItem,
    ItemList,
    Task,
    check_exists,
    check_mode,
    data_error,
    get_field,
    get_options,
    iter_jsonl,
    read_json,
)

TABLE = "videomme/test-00000-of-00001.parquet"
DURATIONS = ("short", "medium", "long")
FALLBACK_SUFFIXES = (".jsonl", ".json", ".csv")


def _parquet_rows(path: Path) -> list[dict] | None:
    """Rows of a parquet file, or None when no parquet reader is installed."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        return pq.read_table(path).to_pylist()
    try:
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    except ImportError:
        return None


def _csv_rows(task: str, path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        raw = row.get("options")
        if isinstance(raw, str):
            try:
                row["options"] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise data_error(task, path, "options must be a JSON list string in a csv table",
                                 row=i, field="options") from e
    return rows


def read_table(task: str, parquet: Path) -> tuple[Path, list[dict]]:
    """(file actually read, rows) for the Video-MME table."""
    fallbacks = [parquet.with_suffix(s) for s in FALLBACK_SUFFIXES]
    if parquet.is_file():
        rows = _parquet_rows(parquet)
        if rows is not None:
            return parquet, rows
    for fb in fallbacks:
        if fb.is_file():
            if fb.suffix == ".jsonl":
                return fb, [row for _, row in iter_jsonl(task, fb)]
            if fb.suffix == ".json":
                return fb, read_json(task, fb, expect=list)
            return fb, _csv_rows(task, fb)
    if parquet.is_file():
        raise data_error(task, parquet, "reading parquet needs the optional dependency 'pyarrow' "
                         f"(pip install pyarrow), or the same table as {fallbacks[0].name}")
    raise data_error(task, parquet, "file not found (nor " + ", ".join(f.name for f in fallbacks) + ")")


def split_option(task: str, path: Path, row: int, option: str) -> tuple[str, str]:
    """'A. text' -> ('A', 'text'): the letter is the text before the first '.' (as R1)."""
    letter, dot, text = option.partition(".")
    letter = letter.strip()
    if not dot or not letter:
        raise data_error(task, path, f"option {option!r} is not of the form 'X. text'", row=row,
                         field="options")
    return letter, text.strip()


class VideoMME(Task):
    name = "videomme"

    def _load(self, root: Path, out: ItemList, *, durations: Sequence[str] = DURATIONS,
              strict: bool = True, check_videos: bool = True):
        """`durations`: the subsets to load (R1 runs one per duration). `strict`: a GT letter that
        is not one of the option letters is a DataError (else kept; it can never be matched)."""
        if isinstance(durations, str):
            durations = [durations]
        bad = [d for d in durations if d not in DURATIONS]
        if bad or not durations:
            raise ConfigError(f"videomme: durations must be a non-empty subset of {list(DURATIONS)}, "
                              f"got {list(durations)}")
        path, rows = read_table(self.name, root / TABLE)
        out.files.append(path)
        for i, row in enumerate(rows):
            duration = get_field(self.name, path, i, row, "duration", str)
            if duration not in DURATIONS:
                raise data_error(self.name, path, f"unknown duration {duration!r}; expected one of "
                                 f"{list(DURATIONS)}", row=i, field="duration")
            if duration not in durations:
                continue
            yield self._item(path, i, row, root, duration, strict, check_videos)

    def _item(self, path, i, row, root, duration, strict, check_videos) -> EvalItem:
        if "options" in row and hasattr(row["options"], "tolist"):
            row = {**row, "options": row["options"].tolist()}  # pandas gives numpy arrays
        video_id = get_field(self.name, path, i, row, "videoID", str)
        question = get_field(self.name, path, i, row, "question", str)
        lines = get_options(self.name, path, i, row, "options")
        answer = get_field(self.name, path, i, row, "answer", str).strip()
        letters, options = zip(*(split_option(self.name, path, i, o) for o in lines))
        if answer not in letters:
            if strict:
                raise data_error(self.name, path, f"answer {answer!r} is not one of the option "
                                 f"letters {list(letters)}", row=i, field="answer")
        video = root / "data" / f"{video_id}.mp4"
        if check_videos:
            check_exists(self.name, path, i, video, "video", field_name="videoID")
        category = {"duration": duration}
        for key in ("domain", "sub_category", "task_type"):
            if row.get(key) is not None:
                category[key] = row[key]
        qid = row.get("question_id")
        return EvalItem(
            id=str(qid) if qid not in (None, "") else f"{video_id}/{i}",
            task=self.name,
            video=video,
            video_kind="video",
            question=question + "\nOptions:\n" + "\n".join(lines),
            options=tuple(options),
            letters=tuple(letters),
            answer=answer,
            stem=question,
            sampling="linspace",  # PyAV seek sampler at linspace(0, frames-1, 16) indices
            category=category,
            meta={"option_lines": list(lines), "videoID": video_id},
        )

    def question_text(self, item: EvalItem, mode: str) -> str:
        check_mode(mode)
        if mode == "reason":
            return item.question  # R1: "{q}\nOptions:\nA. …\nB. …"
        return item.stem + "\n" + "\n".join(item.meta["option_lines"])  # [TV]: no "Options:" line

    def aggregate(self, records):
        per = metrics.grouped_accuracy(records, "duration")
        scores = {d: per[d] for d in DURATIONS if d in per}
        scores["Avg"] = metrics.macro_average(scores)
        scores["micro"] = metrics.accuracy(records)
        return scores
