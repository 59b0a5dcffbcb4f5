"""Reasoning-trace analysis: thinking length, lazy traces, "aha" phrases and revised answers.

The paper reports self-reflection ("aha moments") in the model's thinking; these counters make
that claim measurable on a run's rollouts or eval outputs.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tinyvr.eval.extract import LETTERS_AZ, normalize_letters

# Phrases of self-correction. Longer alternatives first so "let me double-check" is one hit.
AHA_PATTERNS: tuple[str, ...] = (
    r"let\s+me\s+(?:re-?check|double[-\s]check|check|verify|reconsider|re-?think|re-?examine"
    r"|re-?evaluate|look\s+again|think\s+again)",
    r"on\s+second\s+thought",
    r"i\s+made\s+a\s+mistake",
    r"i\s+was\s+wrong",
    r"my\s+mistake",
    r"but\s+earlier",
    r"double[-\s]check(?:ing)?",
    r"re-?examin(?:e|ing)",
    r"re-?consider(?:ing)?",
    r"re-?evaluat(?:e|ing)",
    r"wait",
    r"actually",
    r"hmm+",
)
_AHA = re.compile(r"\b(?:" + "|".join(AHA_PATTERNS) + r")\b", re.IGNORECASE)
_THINK_OPEN = "<think>"
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_EXCERPT_BEFORE, _EXCERPT_AFTER = 60, 120


def _commit_regex(letters: tuple[str, ...]) -> re.Pattern:
    """Phrases that commit to an option letter ("the answer is B", "option C is correct", "it's D")."""
    L = "[" + re.escape("".join(letters)) + "]"
    opt = rf"[(\[]?({L})[)\]]?(?![A-Za-z])"
    return re.compile(
        r"(?i:\banswer\s*(?:is|should\s+be|would\s+be|must\s+be|:)\s*(?:option\s+|choice\s+)?)" + opt
        + r"|(?i:\b(?:option|choice)\s+)" + opt
        + r"(?i:\s+(?:is|seems|looks)\s+(?:\w+\s+)?(?:correct|right|the\s+answer|the\s+best))"
        + r"|(?i:\b(?:it's|it\s+is|choose|pick|select|go\s+with)\s+(?:option\s+|choice\s+)?)" + opt
    )


@dataclass
class ReasoningStats:
    """Per-completion reasoning statistics (see ``analyze_reasoning``)."""

    think_chars: int
    think_words: int
    lazy: bool
    aha: bool
    aha_phrases: list[str] = field(default_factory=list)
    revised: bool = False
    excerpt: str = ""


def think_text(completion: str) -> str | None:
    """Stripped thinking of a completion: the first ``<think>…</think>``; an unclosed
    ``<think>`` (truncated generation) gives everything after it; no ``<think>`` → None."""
    m = _THINK.search(completion)
    if m is not None:
        return m.group(1).strip()
    i = completion.find(_THINK_OPEN)
    return completion[i + len(_THINK_OPEN) :].strip() if i >= 0 else None


def _committed_letters(text: str, letters: tuple[str, ...]) -> list[str]:
    rx = _commit_regex(letters)
    return [next(g for g in m.groups() if g) for m in rx.finditer(text)]


def analyze_reasoning(completion: str, letters: Sequence[str] | None = None) -> ReasoningStats:
    """Statistics of one completion's thinking.

    lazy: no think block, or an empty/whitespace-only one. aha: a self-correction phrase in the
    thinking. revised: the thinking commits to one option letter and later to a different one
    ("so the answer is B ... wait ... actually it's C"). letters: option letters (default A..Z).
    """
    ls = normalize_letters(letters) if letters is not None else LETTERS_AZ
    think = think_text(completion)
    body = think or ""
    hits = list(_AHA.finditer(body))
    phrases: list[str] = []
    for h in hits:
        p = " ".join(h.group(0).lower().split())
        if p not in phrases:
            phrases.append(p)
    excerpt = ""
    if hits:
        a, b = hits[0].start(), hits[0].end()
        excerpt = " ".join(body[max(0, a - _EXCERPT_BEFORE) : b + _EXCERPT_AFTER].split())
    commits = _committed_letters(body, ls)
    return ReasoningStats(
        think_chars=len(body),
        think_words=len(body.split()),
        lazy=not body,
        aha=bool(hits),
        aha_phrases=phrases,
        revised=any(c != commits[0] for c in commits[1:]),
        excerpt=excerpt,
    )


def summarize(stats: Iterable[ReasoningStats], *, max_examples: int = 5) -> dict:
    """Aggregate: think length (mean/median), lazy/aha/revised rates, phrase counts, excerpts."""
    stats = list(stats)
    n = len(stats)
    if n == 0:
        return {
            "n": 0, "think_chars_mean": 0.0, "think_chars_median": 0.0, "think_words_mean": 0.0,
            "lazy_rate": 0.0, "aha_rate": 0.0, "revised_rate": 0.0, "aha_phrase_counts": {},
            "examples": [],
        }  # fmt: skip
    chars = [s.think_chars for s in stats]
    phrase_counts = Counter(p for s in stats for p in s.aha_phrases)  # completions using the phrase
    return {
        "n": n,
        "think_chars_mean": sum(chars) / n,
        "think_chars_median": float(statistics.median(chars)),
        "think_words_mean": sum(s.think_words for s in stats) / n,
        "lazy_rate": sum(s.lazy for s in stats) / n,
        "aha_rate": sum(s.aha for s in stats) / n,
        "revised_rate": sum(s.revised for s in stats) / n,
        "aha_phrase_counts": dict(phrase_counts.most_common()),
        "examples": [s.excerpt for s in stats if s.excerpt][:max_examples],
    }
