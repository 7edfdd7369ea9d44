"""Reflection words: how often completions second-guess themselves ("wait", "let me check").

R1-Zero's "aha moment" shows as a rising share of completions that contain such words. The
list is configurable; matching is case-insensitive, on word boundaries for Latin words and as
plain substrings for CJK phrases (no spaces to bound them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

REFLECTION_WORDS: tuple[str, ...] = (
    "wait",
    "let me check",
    "let me try again",
    "verify",
    "re-check",
    "recheck",
    "等等",
    "让我检查",
    "再试",
)


def _pattern(words: Sequence[str]) -> re.Pattern:
    parts = [re.escape(w) if not w.isascii() else r"\b" + re.escape(w) + r"\b" for w in words]
    return re.compile("|".join(parts), re.IGNORECASE)


def reflection_count(text: str, words: Sequence[str] = REFLECTION_WORDS) -> int:
    """Number of reflection-word occurrences in one text."""
    return len(_pattern(tuple(words)).findall(text or "")) if words else 0


def reflection_rate(texts: Iterable[str], words: Sequence[str] = REFLECTION_WORDS) -> float:
    """Share of texts with at least one reflection word."""
    pat = _pattern(tuple(words)) if words else None
    texts = list(texts)
    if not texts or pat is None:
        return 0.0
    return sum(1 for t in texts if pat.search(t or "")) / len(texts)
