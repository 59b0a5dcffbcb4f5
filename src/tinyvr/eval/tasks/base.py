"""What every evaluation task shares: the item record, the prompt suffixes, the Task base class.

A task turns one benchmark's *own* released files into `EvalItem`s (load), builds the user message
for a mode (prompt), and turns scored records into the numbers the benchmark reports (aggregate).
Decoding videos and extracting answers happen elsewhere (`tinyvr.data.video`, `tinyvr.eval.extract`).

Conventions shared by all tasks:
* Scores are fractions in [0, 1]; the report shows percent.
* Every score dict has the headline key ``Task.headline`` (``"Avg"``) next to its breakdown.
* A record (input of `aggregate`) is a dict with at least ``correct`` (bool) and the item's
  ``category`` dict (or the same keys at top level). Unparseable answers and failed items stay in
  the denominator as wrong answers: no denominator silently drops items.
* A loader error is a `DataError` naming the benchmark, the file, the row and the field. Rows are
  0-based item indices for JSON lists and parquet tables, 1-based line numbers for jsonl files.
"""

from __future__ import annotations

import inspect
import math
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tinyvr.data.template import OPTION_SUFFIX, REASON_SUFFIX  # one definition, shared with training
from tinyvr.errors import ConfigError, DataError

SUFFIXES = {"reason": REASON_SUFFIX, "option": OPTION_SUFFIX}
MODES = tuple(SUFFIXES)

IMAGE_PREFIX = "<image>\n"  # the reference puts the video placeholder on its own first line
VIDEO_KINDS = ("video", "frames")
SAMPLINGS = ("linspace", "segment_middle")
UNMATCHED = "@"  # what the reference uses as GT letter when `answer` matches no candidate


@dataclass(frozen=True)
class EvalItem:
    """One multiple-choice question about one video, ready for the evaluator."""

    id: str  # unique within the task
    task: str  # benchmark name ("mvbench", ...)
    video: Path  # a video file, or a folder of JPEG frames when video_kind == "frames"
    video_kind: str  # "video" | "frames"
    question: str  # question text with options, formatted as the R1 eval formats it (reason mode)
    options: tuple[str, ...]  # option texts without their letters
    letters: tuple[str, ...]  # ("A", "B", ...), one per option
    answer: str  # GT letter; UNMATCHED ("@") only when loaded with strict=False
    stem: str = ""  # the bare question, without options
    bound: tuple[float, float] | None = None  # (start, end) seconds of the clip to read
    fps: float | None = None  # frame rate of a frame folder (MVBench TVQA: 3)
    # Which frame-index rule the original evaluation used for this item (§3.1); our evaluator may
    # use one rule everywhere, this records what the reference did.
    sampling: str = "linspace"
    category: dict[str, Any] = field(default_factory=dict)  # grouping keys for aggregation
    meta: dict[str, Any] = field(default_factory=dict)  # raw pieces a task's prompt() needs

    def __post_init__(self):
        if self.video_kind not in VIDEO_KINDS:
            raise ValueError(f"video_kind must be one of {VIDEO_KINDS}, got {self.video_kind!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if len(self.options) != len(self.letters):
            raise ValueError(f"{self.id}: {len(self.options)} options but {len(self.letters)} letters")

    def to_record(self) -> dict[str, Any]:
        """The item fields a prediction record carries (JSON-friendly)."""
        return {"id": self.id, "task": self.task, "video": str(self.video), "gt": self.answer,
                "category": dict(self.category)}


class ItemList(list):
    """`load()`'s result: the items plus what was read and what was left out on purpose."""

    def __init__(self, items: Iterable[EvalItem] = (), *, files: Sequence[Path] = (),
                 skipped: dict[str, int] | None = None):
        super().__init__(items)
        self.files = [Path(f) for f in files]  # annotation files read (for checksums in the card)
        self.skipped = dict(skipped or {})  # reason -> count, e.g. {"open-ended": 2}

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


def option_letters(n: int) -> tuple[str, ...]:
    if n > 26:
        raise ValueError(f"{n} options: only 26 letters")
    return tuple(chr(ord("A") + i) for i in range(n))


class Task:
    """Base class: subclasses set `name` and implement `_load` and `aggregate`; they override
    `question_text` (or `prompt`) where the two modes format the question differently.

    `_load(root, out, *, <options>)` yields items in file order and records the files it read (and
    any skips) on `out`; its keyword-only parameters are the task's load options. `load` validates
    the option names, applies `limit` and returns the `ItemList`.
    """

    name: str = ""
    headline: str = "Avg"  # the key of aggregate() that goes into the results table

    # ---- loading -------------------------------------------------------------------------------
    def load(self, data_root: str | Path, *, limit: int | None = None, **options) -> ItemList:
        allowed = self.load_options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"task '{self.name}': unknown load option(s) {unknown}; "
                              f"valid: {sorted(allowed)}")
        check_positive(self.name, "limit", limit)
        if "per_task_limit" in options:
            check_positive(self.name, "per_task_limit", options["per_task_limit"])
        root = Path(data_root)
        if not root.is_dir():
            raise DataError(root, f"[{self.name}] data root is not a folder")
        out = ItemList()
        for item in self._load(root, out, **options):
            out.append(item)
            if limit is not None and len(out) >= limit:
                break  # later rows are not read: a smoke run on a big benchmark stays cheap
        if not out:
            raise DataError(root, f"[{self.name}] no items loaded (check the filters: {options})")
        ids = [it.id for it in out]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            where = out.files[0] if len(out.files) == 1 else root
            raise DataError(where, f"[{self.name}] duplicate item id {dup!r}")
        return out

    @classmethod
    def load_options(cls) -> list[str]:
        sig = inspect.signature(cls._load)
        return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def _load(self, root: Path, out: ItemList, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- prompting -----------------------------------------------------------------------------
    def question_text(self, item: EvalItem, mode: str) -> str:
        """Question with options as the reference formats it for `mode` (no prefix, no suffix)."""
        return item.question

    def prompt(self, item: EvalItem, mode: str) -> str:
        """The full user message: `<image>\\n{question text}\\n{mode suffix}` (R1 eval scripts)."""
        check_mode(mode)
        return f"{IMAGE_PREFIX}{self.question_text(item, mode)}\n{SUFFIXES[mode]}"

    # ---- scoring -------------------------------------------------------------------------------
    def aggregate(self, records: Sequence[dict]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def check_positive(task: str, name: str, value) -> None:
    """An optional count option (limit, per_task_limit) must be None or an integer >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"task '{task}': {name} must be a positive integer or None, got {value!r}")


def check_mode(mode: str) -> None:
    if mode not in SUFFIXES:
        raise ConfigError(f"eval mode must be one of {list(MODES)}, got {mode!r}")


# ---- helpers shared by the loaders ---------------------------------------------------------------
def data_error(task: str, path, reason: str, *, row: int | None = None,
               field: str | None = None) -> DataError:
    return DataError(path, f"[{task}] {reason}", line=row, field=field)


def read_json(task: str, path: Path, *, expect=list):
    """Read a whole JSON file; a missing or malformed file is a DataError naming it."""
    if not path.is_file():
        raise data_error(task, path, "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise data_error(task, path, f"invalid JSON: {e.msg}", row=None) from e
    if expect is not None and not isinstance(data, expect):
        raise data_error(task, path, f"expected a JSON {expect.__name__}, got {type(data).__name__}")
    return data


def iter_jsonl(task: str, path: Path):
    """Yield (line number, dict) for each non-empty line."""
    if not path.is_file():
        raise data_error(task, path, "file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise data_error(task, path, f"invalid JSON: {e.msg}", row=lineno) from e
            if not isinstance(row, dict):
                raise data_error(task, path, f"expected a JSON object, got {type(row).__name__}",
                                 row=lineno)
            yield lineno, row


def get_field(task: str, path: Path, row_index: int | None, row: dict, name: str, kind=str,
              *, nonempty: bool = True):
    """`row[name]`, checked for presence and type."""
    if not isinstance(row, dict):
        raise data_error(task, path, f"expected a JSON object, got {type(row).__name__}", row=row_index)
    if name not in row or row[name] is None:
        raise data_error(task, path, "missing", row=row_index, field=name)
    value = row[name]
    # bool is an int subclass; a JSON true where a number is expected is still a wrong type
    wrong_type = kind is not None and (not isinstance(value, kind) or isinstance(value, bool))
    if wrong_type:
        kinds = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise data_error(task, path, f"expected {kinds}, got {type(value).__name__}",
                         row=row_index, field=name)
    if nonempty and isinstance(value, (str, list, dict)) and not value:
        raise data_error(task, path, "empty", row=row_index, field=name)
    return value


def get_options(task: str, path: Path, row_index: int | None, row: dict, name: str) -> list[str]:
    """A list of option texts (>= 2 non-empty strings)."""
    opts = get_field(task, path, row_index, row, name, (list, tuple))
    if len(opts) < 2:
        raise data_error(task, path, f"needs at least 2 options, got {len(opts)}", row=row_index,
                         field=name)
    for i, o in enumerate(opts):
        if not isinstance(o, str):
            raise data_error(task, path, f"option {i} is {type(o).__name__}, expected str",
                             row=row_index, field=name)
    return list(opts)


def match_answer(task: str, path: Path, row_index: int | None, answer: str, options: Sequence[str],
                 *, strict: bool) -> str:
    """GT letter of the option whose text equals `answer` (exact match, as the reference)."""
    for letter, opt in zip(option_letters(len(options)), options):
        if opt == answer:
            return letter
    if strict:
        raise data_error(task, path, f"answer {answer!r} equals none of the candidates {list(options)} "
                         "(the reference would score this item with GT '@', i.e. always wrong; "
                         "load with strict=False to keep that behaviour)", row=row_index, field="answer")
    return UNMATCHED


def check_exists(task: str, path: Path, row_index: int | None, video: Path, kind: str,
                 field_name: str = "video") -> None:
    ok = video.is_dir() if kind == "frames" else video.is_file()
    if not ok:
        what = "frame folder" if kind == "frames" else "video file"
        raise data_error(task, path, f"{what} not found: {video}", row=row_index, field=field_name)


def get_bound(task: str, path: Path, row_index: int, row: dict) -> tuple[float, float]:
    vals = []
    for name in ("start", "end"):
        v = get_field(task, path, row_index, row, name, (int, float))
        vals.append(float(v))
        if not math.isfinite(vals[-1]):
            raise data_error(task, path, f"not a finite number: {v!r}", row=row_index, field=name)
    # No ordering check: the reference clamps the bound to the clip (§3.1) and we do not know
    # that every released row has start < end; the frame reader decides what a bound means.
    return vals[0], vals[1]

