"""Answer extraction: the one place that turns a model's text into an option letter.

Shared by the RL rewards (`tinyvr.rl.rewards`) and by evaluation, so that training and
evaluation can never disagree on what an answer is. Three parsers:

* ``reference``: R1's ``parse_multi_choice_response`` behaviour (spec §8.1), random fallbacks
  included, so the paper's numbers can be reproduced.
* ``strict``: tinyvr's parser; never guesses, and refuses hedged or ambiguous answers.
* option mode: [TV]'s MMMU-style parser for "answer with the letter directly" prompts
  (spec §8.1, last paragraph).

``extract_choice`` is the single entry point that also reports whether the text was
unparseable and whether a random guess was made (evaluation reports both rates).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tinyvr.errors import ConfigError

LETTERS_AZ: tuple[str, ...] = tuple(string.ascii_uppercase)
EXTRACT_MODES: tuple[str, ...] = ("reference", "strict")
ANSWER_FORMATS: tuple[str, ...] = ("tag", "plain")

# The reference rewards and R1's eval use different answer regexes; both are kept verbatim in
# meaning. No DOTALL in either: a multi-line answer does not match (spec §8.1 / §6.3).
_TAG = re.compile(r"<answer>(.*?)</answer>")
_TAG_DOTALL = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_REF_EVAL_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>")

# [TV]/MMMU option mode strips these characters from both ends, one after the other.
_OPTION_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")


@dataclass(frozen=True)
class ExtractResult:
    """Outcome of one extraction.

    letter: the chosen option letter, or None (unparseable, counted wrong).
    parsed: True when the letter was read from the text (not guessed).
    guessed: True when the letter is a random fallback (reference/option mode only).
    """

    letter: str | None
    parsed: bool
    guessed: bool


def find_answer_tag(text: str, *, dotall: bool = False) -> str | None:
    """Content (unstripped) of the first ``<answer>...</answer>``, or None if there is none.

    Without ``dotall`` the content may not span lines, as in the reference rewards.
    """
    m = (_TAG_DOTALL if dotall else _TAG).search(text)
    return m.group(1) if m else None


def find_all_answer_tags(text: str, *, dotall: bool = True) -> list[str]:
    """Contents (unstripped) of every ``<answer>...</answer>`` in order."""
    return [m.group(1) for m in (_TAG_DOTALL if dotall else _TAG).finditer(text)]


def normalize_letters(letters: Sequence[str] | Mapping[str, str] | str) -> tuple[str, ...]:
    """Option letters as a tuple of single upper-case characters (a mapping gives its keys)."""
    keys = list(letters.keys()) if isinstance(letters, Mapping) else list(letters)
    out = []
    for k in keys:
        if not isinstance(k, str) or len(k) != 1 or not k.isalpha():
            raise ValueError(f"option letters must be single letters, got {k!r}")
        if k.upper() not in out:
            out.append(k.upper())
    if not out:
        raise ValueError("at least one option letter is needed")
    return tuple(out)


def _choice(letters: Sequence[str], rng: random.Random | None) -> str:
    # rng None → Python's global generator, which the run seed sets (the reference is unseeded).
    return (rng or random).choice(list(letters))


# --------------------------------------------------------------------------------------------
# reference mode (R1 eval, spec §8.1)


def _parse_reference(response: str, letters: tuple[str, ...], rng) -> tuple[str | None, bool]:
    """(letter, guessed) with R1's rules."""
    m = _REF_EVAL_TAG.search(response)
    if m is None:
        return _choice(letters, rng), True
    content = m.group(1).strip()
    if not content:
        return None, False  # empty tag: R1 returns None, counted wrong
    lower = [c.lower() for c in letters]
    if content[0] in letters or content[0] in lower:
        return content[0].upper(), False
    for c in letters:  # option order decides between several "(X)"
        if f"({c})" in content or f"({c.lower()})" in content:
            return c, False
    return _choice(letters, rng), True


# --------------------------------------------------------------------------------------------
# strict mode (tinyvr)

# "answer is", "the final answer:", "option", "correct choice would be" ... before the letter.
_HEAD = (
    r"(?i:(?:(?:the|my)\s+)?(?:(?:final|correct|best|right)\s+)?(?:answer|option|choice)"
    r"(?:\s+(?:is|would\s+be|should\s+be|must\s+be))?\s*[:=\-]?\s*(?:(?:option|choice)\s*)?)"
)
# Delimiters that may follow a bare letter: end of text, punctuation or a line break.
_AFTER_OK = re.compile(r"^(?:$|\s*\n|\s?[.:;,\-\u2013\u2014])")


def _letter_class(letters: tuple[str, ...], lower: bool) -> str:
    chars = "".join(letters) + ("".join(letters).lower() if lower else "")
    return "[" + re.escape(chars) + "]"


def _strict_regexes(letters: tuple[str, ...]):
    both, upper = _letter_class(letters, True), _letter_class(letters, False)
    lead = re.compile(
        rf"^(?P<head>{_HEAD})?(?P<open>[(\[])?(?P<letter>{both})(?P<close>[)\]])?(?P<after>.*)$", re.DOTALL
    )
    # another option offered next to the first one: "C or D", "C/D", "C, D", "C. D."
    other = re.compile(
        rf"^(?:(?i:or|and|&|/)\s*[(\[]?(?P<a>{upper})[)\]]?(?![A-Za-z])"
        rf"|[(\[]?(?P<b>{upper})(?:[)\]]|[.,;:/](?:\s|$)|\s*$))"
    )
    phrase = re.compile(
        r"(?i:\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=]?\s*)"
        rf"[(\[]?({upper})[)\]]?(?![A-Za-z])"
    )
    paren = re.compile(rf"\(({both})\)")
    return lead, other, phrase, paren


_STRICT_CACHE: dict[tuple[str, ...], tuple] = {}


def _parse_strict_text(content: str, letters: tuple[str, ...]) -> str | None:
    """The letter an answer text commits to, or None when it is missing, hedged or ambiguous.

    Accepted: "B", "B.", "(B)", "[B]", "B) text", "B. text", "B: text", "B\\ntext", "Option B",
    "The answer is B", "Answer: (B)"; a lower-case letter only when a non-letter delimiter (or
    the end) follows it, so "c" and "(c)" are C but "a man ..." is not A. Refused: "C or D",
    "C/D", "C, D", "A. B. C.", "Clearly ...", "A man ..." (a bare capital followed by a word is
    prose), and "Option A is wrong, the answer is B" (commits to a second letter later).
    Fallbacks when the text does not start with the letter: a unique letter after "answer
    is"/"option" anywhere, then a unique "(X)" anywhere.
    """
    if letters not in _STRICT_CACHE:
        _STRICT_CACHE[letters] = _strict_regexes(letters)
    lead, other, phrase, paren = _STRICT_CACHE[letters]
    s = content.strip()
    if not s:
        return None
    m = lead.match(s)
    if m is not None:
        letter, after = m.group("letter"), m.group("after")
        has_open, has_close = m.group("open") is not None, m.group("close") is not None
        brackets_ok = not has_open or has_close  # "(B" is not an answer
        if _AFTER_OK.match(after):
            ok = True
        elif after[:1].isspace():
            # a bare letter followed by a word is prose ("A man ...", "answer is a dog") unless
            # a closing bracket marks it ("(a) dog") or a head phrase precedes a capital
            ok = has_close or (letter.isupper() and m.group("head") is not None)
        else:
            ok = False
        if ok and brackets_ok:
            rest = " ".join(after.split()).lstrip(".:;,-\u2013\u2014 ")
            o = other.match(rest)
            if o is not None and (o.group("a") or o.group("b")) != letter.upper():
                return None  # hedged between two options
            # "Option A is wrong, the answer is B": a later commitment to another letter
            if {g.upper() for g in phrase.findall(" ".join(s.split()))} - {letter.upper()}:
                return None
            return letter.upper()
    flat = " ".join(s.split())
    found = {g.upper() for g in phrase.findall(flat)}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        return None
    found = {g.upper() for g in paren.findall(flat)}
    return found.pop() if len(found) == 1 else None


def _parse_strict_tags(text: str, letters: tuple[str, ...]) -> str | None:
    """Strict letter from the answer tags; every tag must agree (else None)."""
    tags = find_all_answer_tags(text, dotall=True)
    if not tags:
        return None
    got = {_parse_strict_text(t, letters) for t in tags}
    return got.pop() if len(got) == 1 else None  # a None in the set also yields None


def parse_multi_choice_response(
    response: str,
    letters: Sequence[str] | Mapping[str, str],
    *,
    mode: str = "reference",
    rng: random.Random | None = None,
) -> str | None:
    """Option letter from a reasoning-mode response (``<answer>`` tags).

    reference: R1's rules (spec §8.1) including random fallbacks drawn from ``rng``.
    strict: DOTALL tags, no guessing (unparseable → None); see ``_parse_strict_text``.
    """
    return extract_choice(response, letters, mode=mode, answer_format="tag", rng=rng).letter


def _parse_option(response: str, options: Mapping[str, str], letters: tuple[str, ...], rng) -> tuple[str, bool]:
    """(letter, guessed) with [TV]'s MMMU-style option-mode rules."""
    s = response.strip()
    for ch in _OPTION_STRIP_CHARS:
        s = s.strip(ch)
    # "first char is a letter": read as one of the option letters (an upper-case "T" of "The
    # answer is B" is not an option).
    if s and s[0] in letters:
        return s[0], False
    padded = f" {s} "
    cands = [c for c in letters if f"({c})" in padded]
    pattern = "({})" if cands else None
    if not cands:
        cands = [c for c in letters if f" {c} " in padded]
        pattern = " {} " if cands else None
    by_text = False
    if not cands and len(padded.split()) > 5:
        low = padded.lower()
        cands = [c for c in letters if options.get(c) and options[c].lower() in low]
        by_text = bool(cands)
    if not cands:
        return _choice(letters, rng), True
    if len(cands) == 1:
        return cands[0], False
    # several candidates: the one mentioned last wins (ties → first in option order)
    if by_text:
        pos = [padded.lower().rfind(options[c].lower()) for c in cands]
    else:
        pos = [padded.rfind(pattern.format(c)) for c in cands]
    return cands[max(range(len(cands)), key=lambda i: pos[i])], False


def parse_option_response(
    response: str, options: Mapping[str, str], *, rng: random.Random | None = None
) -> str:
    """Option letter from an "answer with the letter directly" response ([TV] option mode).

    options: letter → option text (the text is matched for long answers). Always returns a
    letter; random fallback from ``rng`` when nothing matches.
    """
    return _parse_option(response, options, normalize_letters(options), rng)[0]


def extract_choice(
    text: str,
    letters: Sequence[str] | Mapping[str, str],
    *,
    mode: str = "strict",
    answer_format: str = "tag",
    rng: random.Random | None = None,
) -> ExtractResult:
    """Extract an option letter and say how it was obtained.

    letters: option letters, or a mapping letter → option text (used by reference/plain).
    mode × answer_format: reference/tag = R1 reasoning-mode parser; reference/plain = [TV]
    option-mode parser; strict/tag = strict parser over the answer tags (all must agree);
    strict/plain = strict parser over the whole text.
    """
    if mode not in EXTRACT_MODES:
        raise ConfigError(f"unknown extraction mode {mode!r}; valid: {', '.join(EXTRACT_MODES)}")
    if answer_format not in ANSWER_FORMATS:
        raise ConfigError(
            f"unknown answer_format {answer_format!r}; valid: {', '.join(ANSWER_FORMATS)}"
        )
    ls = normalize_letters(letters)
    if mode == "reference":
        if answer_format == "tag":
            letter, guessed = _parse_reference(text, ls, rng)
        else:
            options = letters if isinstance(letters, Mapping) else {}
            letter, guessed = _parse_option(text, options, ls, rng)
        return ExtractResult(letter, parsed=letter is not None and not guessed, guessed=guessed)
    letter = _parse_strict_tags(text, ls) if answer_format == "tag" else _parse_strict_text(text, ls)
    return ExtractResult(letter, parsed=letter is not None, guessed=False)
