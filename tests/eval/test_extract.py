"""Answer extraction: reference mode against spec §8.1, strict mode, [TV] option mode."""

import random

import pytest

from tinyvr.errors import ConfigError
from tinyvr.eval.extract import (
    ExtractResult,
    extract_choice,
    find_answer_tag,
    parse_multi_choice_response,
    parse_option_response,
)

LETTERS = ["A", "B", "C", "D"]
GUESS = "guess"  # expected: a random letter from LETTERS, marked guessed

# (response, expected) for R1's parser (spec §8.1); each case names the rule it exercises.
REFERENCE_CASES = [
    ("<answer>B</answer>", "B"),
    ("<answer> B </answer>", "B"),  # \s* around the content
    ("<answer>\nB\n</answer>", "B"),  # \s* absorbs the newlines even without DOTALL
    ("<answer>B. dog</answer>", "B"),  # first char
    ("<answer>b</answer>", "B"),  # lower-case option letter accepted, upper-cased
    ("<answer>a man walks</answer>", "A"),  # ... which makes prose start with "a" option A
    ("<answer>dog (A)</answer>", "D"),  # "d" is a lower-case option letter: first char wins
    ("<answer>Clearly B</answer>", "C"),
    ("<answer>C or D</answer>", "C"),
    ("<answer>(C)</answer>", "C"),  # first char "(": (X) search
    ("<answer>(b)</answer>", "B"),  # (x) lower-case also searched
    ("<answer>The answer is (D)</answer>", "D"),  # "T" is not an option letter
    ("<answer>x (c) and (a)</answer>", "A"),  # several (X): first in option order, not in text
    ("<answer>B</answer><answer>C</answer>", "B"),  # first tag only
    ("<think>answer is A</think><answer>D</answer>", "D"),
    ("<answer></answer>", None),  # empty content: None, no guess
    ("<answer>   </answer>", None),
    ("<answer>The answer is D</answer>", GUESS),  # no first-letter, no (X): random
    ("<answer>E</answer>", GUESS),  # not an option letter
    ("no tags at all", GUESS),
    ("<answer>B\nbecause it runs</answer>", GUESS),  # no DOTALL: multi-line content never matches
    ("<ANSWER>B</ANSWER>", GUESS),  # tags are case-sensitive
    ("<answer>B", GUESS),  # unclosed tag
]


@pytest.mark.parametrize("response,expected", REFERENCE_CASES)
def test_reference_mode_matches_spec(response, expected):
    res = extract_choice(response, LETTERS, mode="reference", answer_format="tag", rng=random.Random(0))
    if expected is GUESS:
        assert res.letter in LETTERS and res.guessed and not res.parsed
    else:
        assert res == ExtractResult(expected, parsed=expected is not None, guessed=False)
        assert parse_multi_choice_response(response, LETTERS, mode="reference") == expected


def test_reference_random_fallback_is_seeded_by_rng():
    draws = [parse_multi_choice_response("no tag", LETTERS, rng=random.Random(123)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same guess
    many = {parse_multi_choice_response("no tag", LETTERS, rng=r) for r in [random.Random(i) for i in range(40)]}
    assert many == set(LETTERS)  # it really draws among all the letters


STRICT_CASES = [
    ("<answer>B</answer>", "B"),
    ("<answer>B.</answer>", "B"),
    ("<answer>(B)</answer>", "B"),
    ("<answer>[D]</answer>", "D"),
    ("<answer>B) a cat</answer>", "B"),
    ("<answer>C. cat</answer>", "C"),
    ("<answer>Option B</answer>", "B"),
    ("<answer>The answer is B</answer>", "B"),
    ("<answer>The answer is B because the cat jumps</answer>", "B"),
    ("<answer>Answer: c</answer>", "C"),
    ("<answer>\nB\n</answer>", "B"),
    ("<answer>B\nbecause it runs</answer>", "B"),  # DOTALL
    ("<answer>b</answer>", "B"),  # a lone lower-case letter is unambiguous
    ("<answer>(a) man</answer>", "A"),
    ("<answer>I think the answer is (C)</answer>", "C"),
    ("<answer>I think it is (C)</answer>", "C"),
    ("<answer>B</answer> <answer>B.</answer>", "B"),  # tags agree
    ("<answer>a man walks</answer>", None),  # lower-case first letter + word: prose
    ("<answer>A man walks</answer>", None),  # bare capital + word: prose
    ("<answer>Clearly B</answer>", None),
    ("<answer>C or D</answer>", None),
    ("<answer>The answer is C or D</answer>", None),
    ("<answer>C/D</answer>", None),
    ("<answer>C, D</answer>", None),
    ("<answer>A. B. C. D.</answer>", None),  # listing every option
    ("<answer>option A is wrong, the answer is B</answer>", None),
    ("<answer>(A) or (B)</answer>", None),
    ("<answer>E</answer>", None),  # not an option
    ("<answer>BC</answer>", None),
    ("<answer></answer>", None),
    ("<answer>B</answer><answer>C</answer>", None),  # tags disagree
    ("B", None),  # no tag in tag format
    ("<answer>B", None),
]


@pytest.mark.parametrize("response,expected", STRICT_CASES)
def test_strict_mode(response, expected):
    res = extract_choice(response, LETTERS, mode="strict", answer_format="tag")
    assert res == ExtractResult(expected, parsed=expected is not None, guessed=False)
    assert parse_multi_choice_response(response, LETTERS, mode="strict") == expected


@pytest.mark.parametrize(
    "text,expected",
    [("B", "B"), ("B.", "B"), ("The answer is C.", "C"), ("Sure! The answer is C.", "C"),
     ("a man", None), ("", None), ("Answer: (D)", "D")],
)  # fmt: skip
def test_strict_plain(text, expected):
    assert extract_choice(text, LETTERS, mode="strict", answer_format="plain").letter == expected


OPTIONS = {"A": "a dog", "B": "a cat", "C": "a man running", "D": "nothing"}


@pytest.mark.parametrize(
    "response,expected",
    [
        ("B", "B"),
        ("B.", "B"),
        ("'A'", "A"),  # quote stripped at both ends
        ("  C: a man running  ", "C"),
        ("(C) a man running", "C"),
        ("The answer is (D).", "D"),
        ("I choose B here", "B"),  # space-delimited letter
        ("It is either A or B", "B"),  # several: the one mentioned last
        ("I think the video shows a cat playing outside", "B"),  # > 5 words: option text
        ("The man is a dog and then a cat", "B"),  # several texts: last occurrence
        ("Answer: D", "A"),  # [TV] takes the first character when it is an option letter
    ],
)
def test_option_mode(response, expected):
    assert parse_option_response(response, OPTIONS, rng=random.Random(0)) == expected
    res = extract_choice(response, OPTIONS, mode="reference", answer_format="plain")
    assert res == ExtractResult(expected, parsed=True, guessed=False)


@pytest.mark.parametrize("response", ["", "zzz", "shows a cow", "one two three four five six"])
def test_option_mode_random_fallback(response):
    res = extract_choice(response, OPTIONS, mode="reference", answer_format="plain", rng=random.Random(1))
    assert res.letter in OPTIONS and res.guessed and not res.parsed


def test_find_answer_tag_dotall():
    assert find_answer_tag("x <answer> B </answer> <answer>C</answer>") == " B "
    assert find_answer_tag("<answer>B\n</answer>") is None
    assert find_answer_tag("<answer>B\n</answer>", dotall=True) == "B\n"


def test_unknown_mode_and_format_list_valid_names():
    with pytest.raises(ConfigError, match="reference.*strict"):
        extract_choice("B", LETTERS, mode="lenient")
    with pytest.raises(ConfigError, match="tag.*plain"):
        extract_choice("B", LETTERS, answer_format="json")


def test_bad_letters_rejected():
    with pytest.raises(ValueError):
        extract_choice("B", [])
    with pytest.raises(ValueError):
        extract_choice("B", ["AB"])
