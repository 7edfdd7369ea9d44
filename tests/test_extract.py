"""Answer extraction and number normalisation: hand cases, adversarial inputs, fuzzing."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from _fuzz import any_text
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.rewards.extract import (
    METHODS,
    check_methods,
    extract_answer,
    find_boxed,
    last_number,
    normalize_number,
    number_value,
)
from r1lab.rewards.format import parse_response


@pytest.mark.parametrize(
    "text, want",
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{4", "3"),  # truncated last box is passed over
        ("nested \\boxed{\\{1, 2\\} \\cup {3}}", "\\{1, 2\\} \\cup {3}"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed 7$ ok", "7"),
        ("The final answer is $\\boxed{5}$.", "5"),
    ],
)
def test_boxed(text, want):
    assert extract_answer(text, ("boxed",)) == want


def test_each_method():
    assert extract_answer("<think>x</think><answer> $18$ </answer>", ("answer_tag",)) == "18"
    assert extract_answer("<answer>\\boxed{7}</answer>", ("answer_tag",)) == "7"
    assert extract_answer("<answer>1</answer> <answer>2</answer>", ("answer_tag",)) == "2"
    assert extract_answer("<answer>  </answer><answer>", ("answer_tag",)) is None
    assert extract_answer("9 * 2 = 18\n#### 1,234\n", ("hashes",)) == "1,234"
    assert extract_answer("So the answer is 18 dollars. Then 5", ("answer_is",)) == "18 dollars"
    assert extract_answer("The answer is $3.5$.", ("answer_is",)) == "3.5"
    assert extract_answer("The answer isn't 5, the answer is 6", ("answer_is",)) == "6"
    assert extract_answer("work\nA: 42\n\n", ("final_a_line",)) == "42"
    assert extract_answer("work\n**Answer:** 12", ("final_a_line",)) == "12"
    assert extract_answer("A: 42\nmore text", ("final_a_line",)) is None  # not the final line
    assert extract_answer("we have 3-5 = -2 and then 7/8", ("last_number",)) == "7/8"
    assert extract_answer("x = -5", ("last_number",)) == "-5"
    assert extract_answer("total 1,234.5 kg", ("last_number",)) == "1,234.5"


def test_method_order_and_fallback():
    text = "<answer>5</answer> \\boxed{6} #### 7"
    assert extract_answer(text) == "5"
    assert extract_answer(text, ("boxed", "answer_tag")) == "6"
    assert extract_answer(text, ("hashes",)) == "7"
    assert extract_answer("no digits here") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert check_methods("boxed, hashes") == ("boxed", "hashes")
    with pytest.raises(ValueError, match="unknown extraction method"):
        extract_answer("1", ("telepathy",))


@pytest.mark.parametrize(
    "s, loose, strict",
    [
        ("$1,234.50", "1234.5", "1234.5"),
        ("18.00", "18", "18"),
        ("-0", "0", "0"),
        ("6/8", "3/4", "3/4"),
        ("\\frac{6}{8}", "3/4", "3/4"),
        ("\\dfrac{-3}{4}", "-3/4", "-3/4"),
        ("18 dollars", "18", None),
        ("18kg", "18", None),
        ("18.", "18", "18"),
        (".5", "0.5", "0.5"),
        ("50\\%", "50", "50"),
        ("\u22127", "-7", "-7"),
        ("100,000", "100000", "100000"),
        ("+5", "5", "5"),
        ("3+4", None, None),
        ("5 cm^2", None, None),
        ("3x", None, None),
        ("1e5", None, None),
        ("1/0", None, None),
        ("abc", None, None),
        ("", None, None),
        ("9" * 500, None, None),
    ],
)
def test_normalize_number(s, loose, strict):
    assert normalize_number(s) == loose
    assert normalize_number(s, strict=True) == strict


def test_number_value():
    assert number_value("0.75") == Fraction(3, 4) == number_value("3/4")
    assert number_value("$1,000") == 1000
    assert number_value("x") is None


ADVERSARIAL = [
    "\\boxed{" * 20_000,
    "{" * 50_000 + "\\boxed{1}",
    "\\boxed{" + "{" * 30_000,
    "<answer>" * 20_000 + "</answer>" * 10,
    "####" * 30_000,
    "the answer is " * 20_000,
    "1" * 200_000,
    "1," * 100_000,
    "-" * 50_000 + "1",
    "A: " + "9" * 50_000,
    "\n" * 100_000,
    "1.1." * 50_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_are_fast(text):
    start = time.perf_counter()
    for method in METHODS:
        extract_answer(text, (method,))
    normalize_number(text)
    normalize_number(text[:5000])
    last_number(text)
    parse_response(text)
    assert time.perf_counter() - start < 2.0


def test_long_text_finds_answer_at_the_end():
    text = "blah " * 100_000 + "\\boxed{42} and the answer is 42"
    assert extract_answer(text, ("boxed",)) == "42"
    assert extract_answer(text, ("answer_is",)) == "42"
    assert extract_answer("x" * 20_000 + " 12345", ("last_number",)) == "12345"


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_fuzz_extract_total(text):
    start = time.perf_counter()
    for method in METHODS:
        out = extract_answer(text, (method,))
        assert out is None or (isinstance(out, str) and out.strip() == out and out)
    find_boxed(text)
    norm = normalize_number(text)
    assert norm is None or number_value(norm) is not None
    parsed = parse_response(text)
    assert isinstance(parsed.format_ok, bool)
    parse_response(text, prompt_opens_think=False)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=100, deadline=None)
@given(st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=1000))
def test_fuzz_normalize_roundtrip(value):
    text = f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    assert number_value(text) == value
    assert number_value(normalize_number(text)) == value
