"""Language-consistency reward (R1 §2.3.2): the share of the reasoning's words in the target language.

    consistency(text, lang) = #{words w in text : language(w) = lang} / #{words in text}

It is 1.0 when the text has no words at all. Offline and script-based, no model:

- a run of Latin letters (accents included, not ``×``/``÷``) is one "en" word; a single Latin letter is neutral
  (math variables like ``x`` and ``n`` must not make a Chinese chain of thought "mixed"),
  and so is a LaTeX command (``\\frac``, ``\\times``);
- each CJK ideograph is one "zh" word (Chinese has no spaces; R1 counts characters too);
  each kana is one "ja" word; Hangul, Cyrillic, Greek, Arabic, Hebrew, Devanagari and Thai
  runs are one word each ("ko", "ru", "el", "ar", "he", "hi", "th"); other letters are "other";
- digits, punctuation, whitespace and math symbols (``3*5=15``, ``√``, ``π`` alone) are neutral;
- code is not a language: fenced blocks (```` ``` ````) and inline spans (`` `return x * 3` ``) are
  left out, so a Chinese chain of thought that quotes Python is not "mixed".

How it differs from R1: R1 does not publish its word counter. A script cannot tell English from
French, so "en" means "Latin script" here. Input longer than 200k characters is cut.
"""

from __future__ import annotations

import re

MAX_CHARS = 200_000
LANGUAGES = ("en", "zh", "ja", "ko", "ru", "el", "ar", "he", "hi", "th", "other")
_ALIASES = {"english": "en", "chinese": "zh", "japanese": "ja", "korean": "ko", "russian": "ru"}

# Order matters: the first alternative that matches at a position wins.
_TOKEN_RE = re.compile(
    r"(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<en>[A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u1E00-\u1EFF]+(?:['\u2019][A-Za-z]+)*)"
    r"|(?P<zh>[\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\U00020000-\U0003134F])"
    r"|(?P<ja>[\u3040-\u309F\u30A0-\u30FF])"
    r"|(?P<ko>[\uAC00-\uD7AF\u1100-\u11FF\u3130-\u318F]+)"
    r"|(?P<ru>[\u0400-\u04FF]+)"
    r"|(?P<el>[\u0370-\u03FF]+)"
    r"|(?P<ar>[\u0600-\u06FF]+)"
    r"|(?P<he>[\u0590-\u05FF]+)"
    r"|(?P<hi>[\u0900-\u097F]+)"
    r"|(?P<th>[\u0E00-\u0E7F]+)"
    r"|(?P<other>[^\W\d_]+)"
)
_CODE_RE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)  # fenced (an unclosed one runs to the end), inline
_SINGLE_NEUTRAL = ("en", "el")  # one-letter Latin/Greek tokens are math symbols, not words


def word_languages(text: str) -> list[str]:
    """The language code of each word of ``text``, in order (neutral tokens left out)."""
    if not isinstance(text, str):
        return []
    out = []
    for m in _TOKEN_RE.finditer(strip_code(text[:MAX_CHARS])):
        kind = m.lastgroup
        if kind == "cmd" or (kind in _SINGLE_NEUTRAL and len(m.group(0)) == 1):
            continue
        out.append(kind)
    return out


def strip_code(text: str) -> str:
    """``text`` without its fenced code blocks and inline code spans (each replaced by a space)."""
    return _CODE_RE.sub(" ", text)


def normalize_language(lang: str) -> str:
    """``"en"``, ``"EN"``, ``"english"``, ``"en-US"`` -> ``"en"``; ``"zh-CN"`` -> ``"zh"``."""
    code = str(lang).strip().lower()
    code = _ALIASES.get(code, code.replace("_", "-").split("-")[0])
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}")
    return code


def language_consistency(text: str, lang: str = "en") -> float:
    """Share of the words of ``text`` in language ``lang`` (see module docstring); 1.0 if no words."""
    return share_in(word_languages(text), lang)


def language_reward(text: str, lang: str = "en") -> float:
    """The reward's language term: ``language_consistency``, except that reasoning with no words
    at all (empty, or symbols only) earns 0, not 1. As a reward, "1.0 if no words" pays the
    policy to stop reasoning: measured on the toy, R1's stage 4 with the language reward left
    Chinese Knights-and-Knaves answers with an empty think block 33–50% of the time (0% without
    the reward), which is how it "fixed" their mixing. A wordless task (Countdown's ``3+5=8``)
    then scores 0 in every sample of its group, which moves no advantage."""
    words = word_languages(text)
    return share_in(words, lang) if words else 0.0


def share_in(words: list[str], lang: str) -> float:
    """Share of ``words`` (``word_languages`` output) in language ``lang``; 1.0 if there are none."""
    target = normalize_language(lang)
    if not words:
        return 1.0
    return sum(w == target for w in words) / len(words)
