"""Readers for the reference's data files, with validation and bad-row accounting (§5).

* GRPO jsonl (`nextqa_0-30s.jsonl`): one object per line with `problem`, `solution`
  ("<answer>X</answer>") and `video_filename` ("./NextQA/..."); other keys are kept as columns
  for the reward functions.
* LLaVA conversation json (cold start, SFT, pretrain): a list of
  {"video": rel_path, "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}.

A malformed row does not stop loading: loaders return (rows, bad) where each bad entry is a
DataError naming the file, the line (jsonl, 1-based) or item (json, as field "[i].key") and the
field. Problems with the file as a whole (missing, not JSON, not a list) raise DataError.
Video paths are resolved under `video_root`; a path that escapes it (`..`, absolute) is refused
unless `allow_outside_root=True`. Where a row's options can be known (an `options` column, or
"A. text" lines after "Options:" in the question), empty options and an answer letter that is not
one of them are bad rows too.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyvr.data.template import check_conversation
from tinyvr.errors import ConfigError, DataError

MAX_LINE_BYTES = 1 << 20  # a jsonl row longer than 1 MiB is not a question; refuse, don't parse
GRPO_FIELDS = ("problem", "solution", "video_filename")
LETTERS = tuple(string.ascii_uppercase)
# "A. text", "(A) text", "A) text", "A: text" option lines (NextQA, MVBench, MLVU styles)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*)$")
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")  # a bare option letter: "C", "(C)", "C."


@dataclass(frozen=True)
class GrpoRow:
    """One GRPO prompt. `index` is the 0-based line (line - 1); `columns` holds every other key."""

    index: int
    problem: str
    solution: str
    video_path: Path
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationRow:
    """One SFT sample. `index` is the item's position in the json list; `columns` the other keys."""

    index: int
    video_path: Path
    conversations: list[dict]
    columns: dict[str, Any] = field(default_factory=dict)


def resolve_video_path(video_root, rel: str, *, allow_outside_root: bool = False) -> Path:
    """`video_root / rel` with a leading "./" dropped; ValueError if it leaves the root."""
    if "\x00" in rel:
        raise ValueError("contains a NUL character")
    root = os.path.normpath(os.path.abspath(video_root))
    if os.path.isabs(rel):
        if not allow_outside_root:
            raise ValueError(f"absolute path {rel!r} is outside video_root (allow_outside_root permits it)")
        return Path(os.path.normpath(rel))
    full = os.path.normpath(os.path.join(root, rel))
    if not allow_outside_root and os.path.commonpath([root, full]) != root:
        raise ValueError(f"{rel!r} escapes video_root {root} (allow_outside_root permits it)")
    if full == root:
        raise ValueError(f"{rel!r} names the video root itself, not a file")
    return Path(full)


def _string(obj: dict, key: str) -> str:
    if key not in obj:
        raise KeyError(key)
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("is empty")
    return value


def option_letters(text: str) -> tuple[str, ...] | None:
    """Letters of the option lines ("A. text") after 'Options:' in a question.

    () when 'Options:' ends the text (empty options); None when there is no 'Options:' or fewer
    than two option lines follow it (another layout: nothing can be checked against it)."""
    head, sep, tail = text.partition("Options:")
    if not sep:
        return None
    if not tail.strip():
        return ()
    letters = []
    for line in tail.strip("\n").splitlines():
        m = _OPTION_LINE.match(line)
        if not m:
            break
        letters.append(m.group(1))
    return tuple(letters) if len(letters) >= 2 else None


def answer_letter(text: str) -> str | None:
    """The option letter an answer names: a bare "C" / "(C)" / "C." or that inside <answer> tags."""
    tag = _ANSWER_TAG.search(text)
    m = _LETTER.match((tag.group(1) if tag else text).strip())
    return m.group(1) if m else None


def _check_options(obj: dict, problem: str, solution: str) -> tuple[str, str] | None:
    """(field, reason) when a GRPO row's options are empty or its answer is not one of them."""
    if "options" in obj:  # an explicit column wins over the problem text
        options = obj["options"]
        if isinstance(options, dict):
            keys = list(options)
            if not keys:
                return "options", "is empty"
            if not all(isinstance(k, str) and k in LETTERS for k in keys):
                return "options", f"keys must be option letters A-Z, got {keys[:5]}"
            letters = tuple(keys)
        elif isinstance(options, list):
            if not options:
                return "options", "is empty"
            if not all(isinstance(o, str) and o.strip() for o in options):
                return "options", "must be a list of non-empty strings"
            if len(options) > len(LETTERS):
                return "options", f"has {len(options)} entries; at most {len(LETTERS)} (A-Z)"
            letters = LETTERS[: len(options)]
        else:
            return "options", f"must be a list of option texts, got {type(options).__name__}"
    else:
        letters = option_letters(problem)
        if letters is None:
            return None  # a free-form question: nothing to check the answer against
        if not letters:
            return "problem", "'Options:' is followed by no options"
    letter = answer_letter(solution)
    if letter is not None and letter not in letters:
        return "solution", f"answer {letter!r} is not one of the option letters {', '.join(letters)}"
    given = obj.get("answer")  # a separate answer column (the synthetic data has one) must agree
    given_letter = _LETTER.match(given.strip()) if isinstance(given, str) else None
    if letter is not None and given_letter and given_letter.group(1) != letter:
        return "answer", f"{given!r} disagrees with solution {letter!r}"
    return None


def _read_lines(path: Path, max_line_bytes: int):
    """(line_no, bytes | None) for every line; None marks a line longer than max_line_bytes,
    which is skipped without holding it in memory."""
    with open(path, "rb") as f:
        line_no = 0
        while True:
            chunk = f.readline(max_line_bytes + 1)
            if not chunk:
                return
            line_no += 1
            if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
                while chunk and not chunk.endswith(b"\n"):  # drain the rest of the long line
                    chunk = f.readline(1 << 20)
                yield line_no, None
            else:
                yield line_no, chunk


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "data file not found")
    if not path.is_file():
        raise DataError(path, "not a file")


def select_families(rows: list[GrpoRow], families: list[str], source) -> list[GrpoRow]:
    """The rows whose `family` column is in `families` (all rows when it is empty). A family that no
    row has is an error naming the families the file does have, so a typo cannot train on nothing."""
    if not families:
        return rows
    have = sorted({str(r.columns["family"]) for r in rows if "family" in r.columns})
    if not have:
        raise ConfigError(f"data.families={list(families)}: no row of {source} has a 'family' column")
    missing = [f for f in families if f not in have]
    if missing:
        raise ConfigError(f"data.families: {missing} not in {source} (its families: {have})")
    keep = set(families)
    return [r for r in rows if r.columns.get("family") in keep]


def load_grpo_jsonl(path, video_root, *, allow_outside_root: bool = False, check_exists: bool = False,
                    max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[GrpoRow], list[DataError]]:
    """Read a GRPO jsonl -> (rows, bad). `check_exists` also reports rows whose video is missing."""
    path = Path(path)
    _check_file(path)
    rows: list[GrpoRow] = []
    bad: list[DataError] = []
    seen_any = False
    for line_no, raw in _read_lines(path, max_line_bytes):
        def fail(reason, fld=None):
            bad.append(DataError(path, reason, line=line_no, field=fld))

        if raw is None:
            seen_any = True
            fail(f"line longer than {max_line_bytes} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            seen_any = True
            fail(f"invalid UTF-8 at byte {e.start}")
            continue
        if line_no == 1:
            text = text.lstrip("\ufeff")  # a byte-order mark some editors write
        if not text.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            fail(f"malformed JSON ({e.msg} at column {e.colno})")
            continue
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, 100,000 nested brackets
            fail(f"malformed JSON ({type(e).__name__}: {str(e)[:100]})")
            continue
        if not isinstance(obj, dict):
            fail(f"expected a JSON object, got {type(obj).__name__}")
            continue
        values = {}
        for key in GRPO_FIELDS:
            try:
                values[key] = _string(obj, key)
            except KeyError:
                fail("missing", key)
                break
            except (TypeError, ValueError) as e:
                fail(str(e), key)
                break
        else:
            wrong = _check_options(obj, values["problem"], values["solution"])
            if wrong is not None:
                fail(wrong[1], wrong[0])
                continue
            try:
                video = resolve_video_path(video_root, values["video_filename"],
                                           allow_outside_root=allow_outside_root)
            except ValueError as e:
                fail(str(e), "video_filename")
                continue
            if check_exists and not video.is_file():
                fail(f"video not found: {video}", "video_filename")
                continue
            columns = {k: v for k, v in obj.items() if k not in GRPO_FIELDS}
            rows.append(GrpoRow(line_no - 1, values["problem"], values["solution"], video, columns))
    if not seen_any:
        raise DataError(path, "no rows (empty file)")
    return rows, bad


def load_conversation_json(path, video_root, *, allow_outside_root: bool = False, check_exists: bool = False,
                           require_answer: bool = True) -> tuple[list[ConversationRow], list[DataError]]:
    """Read a LLaVA conversation json list -> (rows, bad).

    Each conversation must alternate human/gpt with the `<image>` placeholder in the first human
    message; `require_answer` (training) also wants the last message from gpt.
    """
    path = Path(path)
    _check_file(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, f"invalid UTF-8 at byte {e.start}", line=line) from e
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=e.lineno) from e
    except (ValueError, RecursionError) as e:
        raise DataError(path, f"malformed JSON ({type(e).__name__}: {str(e)[:100]})") from e
    if not isinstance(items, list):
        raise DataError(path, f"expected a JSON list of samples, got {type(items).__name__}")
    rows: list[ConversationRow] = []
    bad: list[DataError] = []
    for i, item in enumerate(items):
        def fail(reason, fld=""):
            err = DataError(path, reason, field=f"[{i}]{'.' + fld if fld else ''}")
            err.item = i
            bad.append(err)

        if not isinstance(item, dict):
            fail(f"expected a JSON object, got {type(item).__name__}")
            continue
        try:
            video_rel = _string(item, "video")
        except KeyError:
            fail("missing", "video")
            continue
        except (TypeError, ValueError) as e:
            fail(str(e), "video")
            continue
        conv = item.get("conversations")
        if conv is None:
            fail("missing", "conversations")
            continue
        try:
            turns = check_conversation(conv)
        except ValueError as e:
            fail(str(e), "conversations")
            continue
        empty = [j for j, (h, g) in enumerate(turns) if not h.strip() or (g is not None and not g.strip())]
        if empty:
            fail(f"turn {empty[0]} has an empty message", "conversations")
            continue
        if require_answer and turns[-1][1] is None:
            fail("the last message must be the gpt answer", "conversations")
            continue
        letters = option_letters(turns[0][0])
        if letters == ():
            fail("'Options:' is followed by no options", "conversations")
            continue
        letter = answer_letter(turns[0][1]) if letters and turns[0][1] is not None else None
        if letter is not None and letter not in letters:
            fail(f"answer {letter!r} is not one of the option letters {', '.join(letters)}", "conversations")
            continue
        try:
            video = resolve_video_path(video_root, video_rel, allow_outside_root=allow_outside_root)
        except ValueError as e:
            fail(str(e), "video")
            continue
        if check_exists and not video.is_file():
            fail(f"video not found: {video}", "video")
            continue
        columns = {k: v for k, v in item.items() if k not in ("video", "conversations")}
        rows.append(ConversationRow(i, video, list(conv), columns))
    return rows, bad


class BadSampleTracker:
    """Counts good and bad samples and stops a run once bad ones pass `max_fraction`.

    The fraction is judged once `min_samples` samples were seen (a single early failure does not
    end a run); max_fraction=0 stops at the first bad sample. `initial_bad`/`initial_good` carry
    the loader's counts (pass `initial_good=len(rows)` with `initial_bad=len(bad)`).
    """

    def __init__(self, max_fraction: float, *, initial_bad: int = 0, initial_good: int = 0,
                 min_samples: int = 20, source: str = "data", keep: int = 5):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction, self.min_samples, self.source = max_fraction, min_samples, source
        self.num_good, self.num_bad = initial_good, initial_bad
        self.recent: deque[str] = deque(maxlen=keep)  # the last errors, for the final message

    @property
    def fraction(self) -> float:
        total = self.num_good + self.num_bad
        return self.num_bad / total if total else 0.0

    def ok(self) -> None:
        self.num_good += 1

    def bad(self, err: BaseException | str) -> None:
        """Count one bad sample; raises DataError if that passes the allowed fraction."""
        self.num_bad += 1
        self.recent.append(str(err))
        self.check()

    def check(self) -> None:
        if self.num_bad == 0:
            return
        total = self.num_good + self.num_bad
        over = self.max_fraction == 0 or (total >= self.min_samples and self.fraction > self.max_fraction)
        if over:
            last = "".join(f"\n  {e}" for e in self.recent)
            raise DataError(self.source, f"{self.num_bad} of {total} samples are bad ({self.fraction:.1%}), "
                                         f"more than max_bad_fraction={self.max_fraction}"
                                         + (f"; last errors:{last}" if last else ""))

    def state_dict(self) -> dict:
        return {"good": self.num_good, "bad": self.num_bad}

    def load_state_dict(self, state: dict) -> None:
        self.num_good, self.num_bad = int(state["good"]), int(state["bad"])
