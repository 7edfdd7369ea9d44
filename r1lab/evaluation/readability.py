"""Readability of a response, as R1's rejection sampling filtered it, and the filters themselves.

    problems(text, lang="en", code_task=False)   # [] or e.g. ["mixed_language", "code_block"]
    readability_stats(texts, langs)              # means for eval/zero reports

R1 (§2.3.3) dropped chains of thought "with mixed languages, long paragraphs, and code blocks",
and kept only well-formed ones. Each rule here is a pure function of the text:

- ``mixed_language``: language consistency of the reasoning (``rewards.language``) below a
  threshold (default 0.95) in the prompt's language;
- ``long_paragraph``: a paragraph (text between blank lines) longer than ``max_paragraph``
  characters (default 1200);
- ``code_block``: a fenced code block in a task that is not a code task;
- ``tags``: a missing, repeated or misplaced think/answer tag (``rewards.format``);
- ``too_long``: more than ``max_chars`` characters (0 = no limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1lab.rewards.format import parse_response
from r1lab.rewards.language import language_consistency, share_in, word_languages

RULES = ("tags", "mixed_language", "long_paragraph", "code_block", "too_long")
_FENCE = re.compile(r"```")


@dataclass(frozen=True)
class Limits:
    min_consistency: float = 0.95
    max_paragraph: int = 1200
    max_chars: int = 0


def longest_paragraph(text: str) -> int:
    """Characters in the longest paragraph (paragraphs are separated by blank lines)."""
    return max((len(p.strip()) for p in re.split(r"\n\s*\n", text or "")), default=0)


def has_code_block(text: str) -> bool:
    return len(_FENCE.findall(text or "")) >= 2


def problems(text: str, lang: str = "en", code_task: bool = False, limits: Limits | None = None,
             prompt_opens_think: bool = True) -> list[str]:
    """The rules ``text`` breaks, in ``RULES`` order (``[]`` = readable)."""
    lim = limits or Limits()
    parsed = parse_response(text, prompt_opens_think)
    out = []
    if not parsed.format_ok:
        out.append("tags")
    if language_consistency(parsed.think, lang) < lim.min_consistency:
        out.append("mixed_language")
    if longest_paragraph(text) > lim.max_paragraph:
        out.append("long_paragraph")
    if not code_task and has_code_block(text):
        out.append("code_block")
    if lim.max_chars and len(text or "") > lim.max_chars:
        out.append("too_long")
    return out


def readability_stats(texts: list[str], langs: list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    """Means over responses: language consistency of the reasoning in its prompt's language over
    the responses whose reasoning has words (an empty reasoning scores 1.0 by R1's definition,
    which would make a model that stops reasoning look consistent), the share of responses
    with no words of reasoning, the share with mixed languages (consistency < 0.95), and the
    longest paragraph (characters)."""
    if not texts:
        return {}
    thinks = [parse_response(t, prompt_opens_think).think for t in texts]
    words = [(word_languages(think), lang) for think, lang in zip(thinks, langs)]
    cons = [share_in(w, lang) for w, lang in words if w]  # each think tokenized once
    return {
        "language_consistency": sum(cons) / len(cons) if cons else 1.0,
        "empty_reasoning_share": 1 - len(cons) / len(texts),
        "mixed_language_share": sum(c < Limits().min_consistency for c in cons) / len(texts),
        "longest_paragraph": sum(longest_paragraph(t) for t in texts) / len(texts),
    }
