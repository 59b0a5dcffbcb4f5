"""MMVU validation set, multiple-choice part only ("MMVU (mc)", as R1 reports it).

    DATA_ROOT/validation.json   a JSON list: {id, video, question, question_type
                                ("multiple-choice" | "open-ended"), choices {letter: text},
                                answer (letter for multiple-choice), metadata {...}}
    DATA_ROOT/videos/...        the videos, mirroring the Hugging Face dataset tree: each item's
                                `video` URL starts with VIDEO_URL_PREFIX, which is replaced by
                                DATA_ROOT (a relative `video` is taken under DATA_ROOT as is)

Open-ended items are skipped (counted in `ItemList.skipped["open-ended"]`).
Score: `multiple-choice` accuracy, and `Avg` equal to it.
"""

from __future__ import annotations

from pathlib import Path

from tinyvr.eval import metrics
from tinyvr.eval.tasks.base import (
    EvalItem,
    ItemList,
    Task,
    check_exists,
    data_error,
    get_field,
    read_json,
)

VIDEO_URL_PREFIX = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main"
QUESTION_TYPES = ("multiple-choice", "open-ended")


def local_video(root: Path, video: str) -> Path | None:
    """The local path of an item's `video`, or None for a URL we cannot map."""
    if video.startswith(VIDEO_URL_PREFIX):
        return root / video[len(VIDEO_URL_PREFIX):].lstrip("/")
    if "://" in video:
        return None
    return root / video


class MMVU(Task):
    name = "mmvu"

    def _load(self, root: Path, out: ItemList, *, check_videos: bool = True):
        path = root / "validation.json"
        rows = read_json(self.name, path, expect=list)
        out.files.append(path)
        for i, row in enumerate(rows):
            qtype = get_field(self.name, path, i, row, "question_type", str)
            if qtype not in QUESTION_TYPES:
                raise data_error(self.name, path, f"unknown question_type {qtype!r}; expected one of "
                                 f"{list(QUESTION_TYPES)}", row=i, field="question_type")
            if qtype == "open-ended":
                # R1 scores only multiple-choice items; the skip is counted, not hidden
                out.skipped["open-ended"] = out.skipped.get("open-ended", 0) + 1
                continue
            yield self._item(root, path, i, row, check_videos)

    def _item(self, root, path, i, row, check_videos) -> EvalItem:
        video = get_field(self.name, path, i, row, "video", str)
        question = get_field(self.name, path, i, row, "question", str)
        choices = get_field(self.name, path, i, row, "choices", dict)
        answer = get_field(self.name, path, i, row, "answer", str).strip()
        if len(choices) < 2:
            raise data_error(self.name, path, f"needs at least 2 choices, got {len(choices)}", row=i,
                             field="choices")
        for letter, text in choices.items():
            if not isinstance(text, str):
                raise data_error(self.name, path, f"choice {letter!r} is {type(text).__name__}, "
                                 "expected str", row=i, field="choices")
        letters = tuple(choices)  # JSON object order is the order the reference prints them in
        if answer not in letters:
            raise data_error(self.name, path, f"answer {answer!r} is not one of the choice letters "
                             f"{list(letters)}", row=i, field="answer")
        video_path = local_video(root, video)
        if video_path is None:
            raise data_error(self.name, path, f"video URL does not start with {VIDEO_URL_PREFIX}",
                             row=i, field="video")
        if check_videos:
            check_exists(self.name, path, i, video_path, "video")
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        category = {"question_type": "multiple-choice"}
        for key in ("subject", "discipline"):
            if meta.get(key) is not None:
                category[key] = meta[key]
        rid = row.get("id")
        return EvalItem(
            id=str(rid) if rid not in (None, "") else str(i),
            task=self.name,
            video=video_path,
            video_kind="video",
            question=question + "\n" + "\n".join(f"{l}. {t}" for l, t in choices.items()),
            options=tuple(choices.values()),
            letters=letters,
            answer=answer,
            stem=question,
            sampling="linspace",  # pytorchvideo full decode + linspace
            category=category,
            meta={"video_url": video},
        )

    def aggregate(self, records):
        acc = metrics.accuracy(records)
        return {"multiple-choice": acc, "Avg": acc}
