"""Find the final answer in free-form model text, and normalise numbers for comparison.

``extract_answer(text, methods)`` tries, in the given order, until one finds something:

==============  ==============================================================
answer_tag      content of the last complete ``<answer>…</answer>`` (a ``\\boxed{}``
                inside it is unwrapped)
boxed           content of the last ``\\boxed{…}`` / ``\\fbox{…}`` with balanced braces
                (also ``\\boxed 5``); an unclosed (truncated) box is passed over
hashes          the rest of the line after the last ``####`` (GSM8K's gold format)
answer_is       the rest of the sentence after the last "the (final) answer is"
final_a_line    the last non-empty line, if it reads ``A: X`` / ``Answer: X``
last_number     the last number (``-1,234.5``, ``3/4``) in the text
==============  ==============================================================

The result is the raw answer text, stripped of ``$…$``, ``**`` and a trailing period; tasks
normalise it further (``normalize_number`` for numbers, LaTeX clean-up for MATH).

Every function here is total and fast on any input: no regex with nested quantifiers,
the tag/box scans look at the last 100k characters and at most 20 candidates, the regex
fallbacks at the last 10k characters.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

METHODS = ("answer_tag", "boxed", "hashes", "answer_is", "final_a_line", "last_number")
SCAN_CHARS = 100_000  # tail of the text scanned for tags and boxes
TAIL_CHARS = 10_000  # tail of the text searched by the regex fallbacks
MAX_CANDIDATES = 20  # boxes / tags tried from the end before giving up
MAX_BOX_CHARS = 10_000  # a box whose content is longer is passed over
MAX_ANSWER_CHARS = 2_000  # an extracted answer longer than this is cut
MAX_DIGITS = 400  # longer digit strings are not treated as numbers

_BRACE_RE = re.compile(r"[{}]")
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"\banswer\s{0,5}(?:is\b|:)[ \t:]{0,5}([^\n]*)", re.IGNORECASE)
_A_LINE_RE = re.compile(r"^(?:A|Answer|ANSWER|answer|Final Answer|Final answer)[ \t]{0,5}[:：][ \t]*(.+)$")
_NUMBER_RE = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_LEADING_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SIMPLE_FRAC_RE = re.compile(r"\\[dt]?frac\{(-?\d{1,50})\}\{(\d{1,50})\}")
_UNIT_RE = re.compile(r"(?:\s|[A-Za-z]{2})[^\d=+\-*/^\\{}\[\]()<>|]*")


def _tail(text: str, n: int) -> str:
    """The last ``n`` characters, without a number cut in half at the start."""
    if len(text) <= n:
        return text
    tail = text[-n:]
    i = 0
    while i < len(tail) and (tail[i].isdigit() or tail[i] in ",."):
        i += 1
    return tail[i:]


def _clean(answer: str) -> str | None:
    """Strip delimiters and decoration from an extracted answer; None if nothing is left."""
    s = answer.strip()[:MAX_ANSWER_CHARS].replace("**", "").strip()
    if "\\boxed" in s or "\\fbox" in s:
        inner = find_boxed(s)
        if inner is not None:
            s = inner
    for _ in range(3):  # peel a few layers: "$18$." -> "18"
        s = s.strip().rstrip(".").strip()
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$")
        elif s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
            s = s[2:-2]
    s = s.strip()
    return s or None


def _box_content(text: str, pos: int) -> str | None:
    """Content of the box command starting at ``pos`` (``\\boxed`` or ``\\fbox``), or None."""
    i = pos + (len("\\boxed") if text.startswith("\\boxed", pos) else len("\\fbox"))
    if i < len(text) and text[i] == "{":
        depth = 0
        for m in _BRACE_RE.finditer(text, i, i + MAX_BOX_CHARS):
            depth += 1 if m.group(0) == "{" else -1
            if depth == 0:
                return text[i + 1 : m.start()]
        return None  # unclosed (a truncated completion) or longer than MAX_BOX_CHARS
    if i < len(text) and text[i] == " ":
        m = re.match(r" +([^\s$]{1,200})", text[i : i + 210])
        return m.group(1) if m else None
    return None


def find_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{…}`` or ``\\fbox{…}``, stripped; None if none."""
    if not isinstance(text, str):
        return None
    text = text[-SCAN_CHARS:]
    end = len(text)
    for _ in range(MAX_CANDIDATES):
        pos = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
        if pos < 0:
            return None
        content = _box_content(text, pos)
        if content is not None and content.strip():
            return content.strip()
        end = pos
    return None


def _answer_tag(text: str) -> str | None:
    text = text[-SCAN_CHARS:]
    end = len(text)
    for _ in range(MAX_CANDIDATES):
        close = text.rfind("</answer>", 0, end)
        if close < 0:
            return None
        start = text.rfind("<answer>", 0, close)
        if start < 0:
            return None
        found = _clean(text[start + len("<answer>") : close])
        if found is not None:
            return found
        end = start
    return None


def _boxed(text: str) -> str | None:
    found = find_boxed(text)
    return _clean(found) if found is not None else None


def _last_match(pattern: re.Pattern, text: str) -> str | None:
    """Cleaned group 1 of the last match of ``pattern`` with a non-empty answer."""
    matches = list(pattern.finditer(_tail(text, TAIL_CHARS)))
    for m in reversed(matches[-MAX_CANDIDATES:]):
        found = _clean(m.group(1))
        if found is not None:
            return found
    return None


def _hashes(text: str) -> str | None:
    return _last_match(_HASHES_RE, text)


def _answer_is(text: str) -> str | None:
    found = _last_match(_ANSWER_IS_RE, text)
    if found is None:
        return None
    cut = re.search(r"\.(?:\s|$)", found)  # end of sentence, not a decimal point
    return _clean(found[: cut.start()]) if cut else found


def _final_a_line(text: str) -> str | None:
    lines = [ln for ln in _tail(text, TAIL_CHARS).splitlines() if ln.strip()]
    if not lines:
        return None
    m = _A_LINE_RE.match(lines[-1].replace("**", "").strip())
    return _clean(m.group(1)) if m else None


def last_number(text: str) -> str | None:
    """The last number in (the last 10k characters of) ``text``, as written; None if none."""
    if not isinstance(text, str):
        return None
    last = None
    for m in _NUMBER_RE.finditer(_tail(text, TAIL_CHARS)):
        last = m
    return last.group(0) if last else None


_EXTRACTORS = {
    "answer_tag": _answer_tag,
    "boxed": _boxed,
    "hashes": _hashes,
    "answer_is": _answer_is,
    "final_a_line": _final_a_line,
    "last_number": last_number,
}


def check_methods(methods: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """Validate extraction method names (a tuple, list or comma-separated string)."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(methods)
    unknown = [m for m in methods if m not in _EXTRACTORS]
    if unknown or not methods:
        raise ValueError(f"unknown extraction method(s) {unknown}; choose from {', '.join(METHODS)}")
    return methods


def extract_answer(text: str, methods: tuple[str, ...] = METHODS) -> str | None:
    """The final answer in ``text`` by the first method (in order) that finds one, or None."""
    if not isinstance(text, str) or not text:
        return None
    for name in check_methods(methods):
        found = _EXTRACTORS[name](text)
        if found is not None:
            return found
    return None


def _clean_number_text(s: str) -> str:
    s = s.strip()[:MAX_ANSWER_CHARS]
    for old in ("\\!", "\\,", "\\;", "\\ ", "{,}", "\\$", "$", "\\%", "%", "\\text{", "\\mathrm{"):
        s = s.replace(old, "")
    s = _SIMPLE_FRAC_RE.sub(r"\1/\2", s) if "frac" in s else s
    s = s.replace("\u2212", "-").replace("}", " ").strip()
    return _THOUSANDS_RE.sub("", s).strip()


def normalize_number(s: str, strict: bool = False) -> str | None:
    """Canonical text of the number that ``s`` states, or None if it is not a number.

    Strips ``$``, ``\\%``, LaTeX spacing, thousands commas and a trailing period;
    ``"$1,234.50"`` -> ``"1234.5"``, ``"18.00"`` -> ``"18"``, ``"-0"`` -> ``"0"``;
    fractions stay fractions in lowest terms: ``"6/8"`` and ``"\\frac{6}{8}"`` -> ``"3/4"``.
    Non-strict: unit-like trailing words are dropped (``"18 dollars"`` -> ``"18"``) but not
    text with digits or operators (``"3+4"``, ``"5 cm^2"`` -> None). Strict: nothing may follow.
    """
    if not isinstance(s, str):
        return None
    text = _clean_number_text(s)
    m = _LEADING_NUMBER_RE.match(text)
    if m is None:
        return None
    rest = text[m.end() :].strip().rstrip(".").strip()
    if rest and (strict or not _UNIT_RE.fullmatch(" " + rest if text[m.end() :][:1].isspace() else rest)):
        return None
    body = m.group(0)
    if sum(c.isdigit() for c in body) > MAX_DIGITS:
        return None
    num, _, den = body.partition("/")
    try:
        value = Fraction(Decimal(num))
        if den:
            if int(den) == 0:
                return None
            value /= int(den)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    if den or value.denominator == 1:
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    text_out = format(Decimal(num).normalize(), "f")
    return "0" if text_out in ("-0", "0") else text_out.lstrip("+")


def number_value(s: str, strict: bool = False) -> Fraction | None:
    """Exact value of the number ``s`` states (see ``normalize_number``), or None."""
    norm = normalize_number(s, strict=strict)
    if norm is None:
        return None
    num, _, den = norm.partition("/")
    return Fraction(Decimal(num)) / (int(den) if den else 1)
