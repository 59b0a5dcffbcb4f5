"""Reward functions with TRL's signature ``f(completions, solution, **columns) -> list[float]``.

``completions`` is a list of strings or TRL's conversational form (a list of messages per
completion; the last message's content is scored). Every function takes ``compat``:

* ``"reference"`` reproduces R1's ``train/train.py`` rewards value for value (spec §6.3),
  loopholes included (spec §10.3);
* ``"tinyvr"`` (default) closes those loopholes; each function's docstring says how.

No torch import here: rewards run on decoded strings and must be cheap to import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence

from tinyvr.errors import ConfigError
from tinyvr.eval.extract import (
    LETTERS_AZ,
    extract_choice,
    find_answer_tag,
    normalize_letters,
)

COMPAT_MODES: tuple[str, ...] = ("tinyvr", "reference")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FORMAT_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# Option lines of a problem text ("A. owl.", "(B) dog"), used when options come as one string.
_OPTION_LINE = re.compile(r"(?m)^\s*\(?([A-Z])[.):]\s")
# An option line of the problem ("C. green") and a line of the option check that copies one with its
# verdict ("C. green: yes"; src/tinyvr/data/template.py:option_check)
_PROBLEM_OPTION = re.compile(r"^\s*([A-Z])\.\s?(.+?)\s*$")
_CHECK_LINE = re.compile(r"^\s*([A-Z])\.\s?(.+?)\s*:\s*(?:yes|no)\s*$", re.IGNORECASE)
# A word for the anti-farming length: surrounding punctuation is not part of its identity.
_PUNCT = ".,;:!?\"'()[]{}<>`*-_"


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ConfigError(f"unknown reward compat {compat!r}; valid: {', '.join(COMPAT_MODES)}")


def completion_text(completion) -> str:
    """The text to score: a string as is; TRL conversational form → last message's content."""
    if isinstance(completion, str):
        return completion
    msg = completion[-1] if isinstance(completion, Sequence) else completion
    content = msg["content"] if isinstance(msg, Mapping) else msg
    if isinstance(content, str):
        return content
    # multimodal content parts: keep the text parts in order
    return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))


def _texts(completions) -> list[str]:
    return [completion_text(c) for c in completions]


def _column(values, n: int, name: str) -> list:
    """A per-completion column (TRL passes one value per completion); None → n Nones."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column '{name}' has {len(values)} values for {n} completions")
    return values


def option_letters(options) -> tuple[str, ...]:
    """Letters of an ``options`` value: mapping keys, list position (A, B, ...) or option lines."""
    if options is None:
        return LETTERS_AZ
    if isinstance(options, Mapping):
        return normalize_letters(options)
    if isinstance(options, str):
        found = _OPTION_LINE.findall(options)
        return normalize_letters(found) if found else LETTERS_AZ
    return LETTERS_AZ[: len(options)] if len(options) else LETTERS_AZ


# --------------------------------------------------------------------------------------------
# accuracy


def _reference_accuracy(text: str, sol: str) -> float:
    # math_verify branch of the reference omitted on purpose: for option-letter solutions
    # parse("<answer>C</answer>") is [] so verify() is always False (spec §6.3, §10.3 item 4).
    gt = find_answer_tag(sol)
    gt = gt.strip() if gt is not None else sol.strip()
    student = find_answer_tag(text)
    student = student.strip() if student is not None else text.strip()  # whole text: §10.3 #1
    return 1.0 if student and (student == gt or gt == student[0]) else 0.0


def _tinyvr_accuracy(text: str, sol: str, letters: tuple[str, ...]) -> float:
    gt_text = find_answer_tag(sol, dotall=True)
    gt_text = (gt_text if gt_text is not None else sol).strip()
    gt = extract_choice(gt_text, LETTERS_AZ, mode="strict", answer_format="plain").letter
    if gt is None:
        # free-form ground truth: exact match of the (whitespace-collapsed) tag content
        tag = find_answer_tag(text, dotall=True)
        return float(tag is not None and " ".join(tag.split()) == " ".join(gt_text.split()) != "")
    got = extract_choice(text, letters, mode="strict", answer_format="tag").letter
    return float(got == gt)


def accuracy_reward(completions, solution, *, compat: str = "tinyvr", options=None, **columns) -> list[float]:
    """1.0 if the completion's answer is the solution's, else 0.0.

    reference: spec §6.3 exactly — GT = first ``<answer>`` tag of the solution (no DOTALL)
    stripped, else the stripped solution; student = first tag of the completion stripped, else the
    WHOLE stripped completion; 1 if student is non-empty and (student == GT or student[0] == GT),
    case-sensitive. So "Clearly wrong" and "<answer>C or D</answer>" score 1 for GT C.
    tinyvr: no ``<answer>`` tag → 0; the tag content (DOTALL, whitespace/newlines ok) goes through
    the strict parser (``tinyvr.eval.extract``) against A..Z, or the letters of the ``options``
    column; every answer tag must agree; the letter must equal the GT letter. Hence "C", "C.",
    "C. cat", "(C)", "\\nC\\n", "The answer is C" → 1 and "C or D", "C/D", "Clearly" → 0. A lone
    lower-case "c" → 1 (unambiguous), "a man ..." is not A. A GT that is not a letter is compared
    as exact text.
    """
    _check_compat(compat)
    texts = _texts(completions)
    sols = _column(solution, len(texts), "solution")
    opts = _column(options, len(texts), "options")
    if compat == "reference":
        return [_reference_accuracy(t, s) for t, s in zip(texts, sols)]
    return [_tinyvr_accuracy(t, s, option_letters(o)) for t, s, o in zip(texts, sols, opts)]


# --------------------------------------------------------------------------------------------
# format


def think_block(text: str) -> str | None:
    """Stripped content of the first ``<think>...</think>`` (DOTALL), or None."""
    m = _THINK.search(text)
    return m.group(1).strip() if m else None


def format_ok(text: str) -> bool:
    """Reference gate: the stripped text is ``<think>…</think> <answer>…</answer>`` exactly,
    with each of the four tags exactly once."""
    s = text.strip()
    return _FORMAT.fullmatch(s) is not None and all(s.count(t) == 1 for t in _FORMAT_TAGS)


def _words(text: str) -> list[str]:
    return text.split()


def _key(word: str) -> str:
    return word.strip(_PUNCT).lower()


def informative_length(think: str, problem: str | None = None) -> int:
    """Characters of ``think`` that carry new content (tinyvr's anti-farming length).

    Rule: split on whitespace; a word counts when the word 3-gram ending at it (words compared
    lower-cased, end punctuation stripped; two start pads) has not been seen earlier in the
    think block nor anywhere in ``problem``. Counted words contribute their characters plus one
    separating space. For text with no repeated 3-gram this equals the whitespace-collapsed
    length; a sentence repeated 50 times counts about once; padding whitespace counts nothing;
    question text copied verbatim counts (almost) nothing, and neither does a line of the option
    check, a line of the problem's options copied with a yes/no verdict: the check runs up to the
    picked letter, so counting it would make a completion's length depend on its letter, and in a
    group whose answers are all wrong the length term, normalised, would then reward the first
    letters alone (docs/tiny-study.md, item 30).
    """
    seen: set[tuple[str, str, str]] = set()
    if problem:
        options = {(m[1], m[2]) for m in map(_PROBLEM_OPTION.match, problem.splitlines()) if m}
        think = "\n".join(line for line in think.splitlines()
                          if not ((m := _CHECK_LINE.match(line)) and (m[1], m[2]) in options))
        pk = [_key(w) for w in _words(problem)]
        seen.update(zip(pk, pk[1:], pk[2:]))
    words = _words(think)
    keys = ["\x00", "\x00"] + [_key(w) for w in words]  # start pads: the first words count
    total = 0
    for i, w in enumerate(words):
        gram = (keys[i], keys[i + 1], keys[i + 2])
        if gram not in seen:
            seen.add(gram)
            total += len(w) + 1
    return max(total - 1, 0)  # no space after the last counted word


def _format_score(length: int, length_scale: float, min_score: float) -> float:
    return min_score + (1.0 - min_score) * min(length / length_scale, 1.0)


def format_reward(
    completions,
    *,
    compat: str = "tinyvr",
    length_scale: float = 1200,  # reference: 1200 characters of thinking earn the full bonus
    min_score: float = 0.5,  # reference: 0.5 for the format alone, + up to 0.5 for length
    problem=None,
    **columns,
) -> list[float]:
    """``min_score + (1-min_score)·min(L/length_scale, 1)`` if the format gate holds, else 0.

    Gate (both modes, spec §6.3): the stripped completion fully matches
    ``<think>.*?</think>\\s*<answer>.*?</answer>`` (DOTALL) and each of the four tags occurs once.
    reference: L = characters of the stripped think block (farmable by padding/repetition).
    tinyvr: L = ``informative_length(think, problem)`` — whitespace runs collapse, repeated word
    3-grams count once, 3-grams of the ``problem`` column (when given) count nothing.
    """
    _check_compat(compat)
    if length_scale <= 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")
    texts = _texts(completions)
    problems = _column(problem, len(texts), "problem")
    out = []
    for t, p in zip(texts, problems):
        if not format_ok(t):
            out.append(0.0)
            continue
        think = think_block(t.strip()) or ""
        n = len(think) if compat == "reference" else informative_length(think, p)
        out.append(_format_score(n, length_scale, min_score))
    return out


# --------------------------------------------------------------------------------------------
# combined TinyLLaVA-Video-R1 reward


def tinyllava_r1_reward_breakdown(
    completions,
    solution,
    *,
    compat: str = "tinyvr",
    length_scale: float = 1200,
    wrong_penalty: bool = True,  # reference: a wrong answer turns the format bonus negative
    zero_value: float = -2.0,  # reference: a total of exactly 0 (wrong, no format) becomes −2
    continuous_length: bool = True,  # False (ablation): format term is 1 if the gate holds
    **columns,
) -> dict[str, list[float]]:
    """Per-component rewards: ``{"accuracy", "format", "total"}``, one value per completion.

    total = acc + (2·acc − 1)·fmt (wrong_penalty) or acc + fmt; total == 0 → zero_value.
    """
    acc = accuracy_reward(completions, solution, compat=compat, **columns)
    fmt = format_reward(completions, compat=compat, length_scale=length_scale, **columns)
    if not continuous_length:
        fmt = [1.0 if f > 0 else 0.0 for f in fmt]
    total = []
    for a, f in zip(acc, fmt):
        r = a + (2.0 * a - 1.0) * f if wrong_penalty else a + f
        total.append(zero_value if r == 0 else r)
    return {"accuracy": acc, "format": fmt, "total": total}


def tinyllava_r1_reward(
    completions,
    solution,
    *,
    compat: str = "tinyvr",
    length_scale: float = 1200,
    wrong_penalty: bool = True,
    zero_value: float = -2.0,
    continuous_length: bool = True,
    **columns,
) -> list[float]:
    """The combined reward of spec §6.2 step 9 (see ``tinyllava_r1_reward_breakdown``).

    >>> tinyllava_r1_reward(["<think>x</think><answer>B</answer>", "B"], ["<answer>B</answer>"] * 2,
    ...                     continuous_length=False)
    [2.0, -2.0]
    """
    return tinyllava_r1_reward_breakdown(
        completions,
        solution,
        compat=compat,
        length_scale=length_scale,
        wrong_penalty=wrong_penalty,
        zero_value=zero_value,
        continuous_length=continuous_length,
        **columns,
    )["total"]


# --------------------------------------------------------------------------------------------
# registry

RewardFn = Callable[..., list]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "tinyllava_r1": tinyllava_r1_reward,
}


def get_reward_fn(name_or_path: str) -> RewardFn:
    """A registered reward name, or ``package.module:function`` for a user's reward.

    The module is imported only when named this way (no eval/exec).
    """
    if name_or_path in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name_or_path]
    if ":" not in name_or_path:
        raise ConfigError(
            f"unknown reward {name_or_path!r}; valid: {', '.join(sorted(REWARD_FUNCTIONS))} "
            "or an import path 'module:function'"
        )
    module_name, _, attr = name_or_path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"reward import path {name_or_path!r} must look like 'module:function'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"reward {name_or_path!r}: cannot import module {module_name!r} ({e})") from e
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ConfigError(f"reward {name_or_path!r}: module {module_name!r} has no {attr!r}") from e
    if not callable(obj):
        raise ConfigError(f"reward {name_or_path!r} is not callable (got {type(obj).__name__})")
    return obj
