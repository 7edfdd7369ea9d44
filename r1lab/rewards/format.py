"""Format reward: the reasoning inside <think>…</think>, then the answer inside <answer>…</answer>.

R1-Zero's template ends the prompt with ``<think>``, so a completion looks like
``reasoning…</think><answer>…</answer>``. When the prompt did not open the tag, the completion
must open it itself. Nothing but whitespace may follow ``</answer>``; exactly one of each tag.
All functions are total: any string in, a value out, no exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Parsed:
    think: str  # the reasoning text ('' if none found)
    answer: str | None  # content of the last <answer>…</answer>, stripped; None if absent
    format_ok: bool


def parse_response(completion: str, prompt_opens_think: bool = True) -> Parsed:
    """Split a completion into reasoning and answer and check the think/answer format."""
    text = completion if isinstance(completion, str) else ""
    if prompt_opens_think and not text.lstrip().startswith(THINK_OPEN):
        full = THINK_OPEN + text
    else:
        full = text
    answers = _ANSWER_RE.findall(full)
    answer = answers[-1].strip() if answers else None
    counts_ok = all(full.count(tag) == 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
    ok = False
    think = ""
    if counts_ok:
        t_open, t_close = full.find(THINK_OPEN), full.find(THINK_CLOSE)
        a_open, a_close = full.find(ANSWER_OPEN), full.find(ANSWER_CLOSE)
        ordered = full[:t_open].strip() == "" and t_open < t_close < a_open < a_close
        between = full[t_close + len(THINK_CLOSE) : a_open].strip() == ""
        tail = full[a_close + len(ANSWER_CLOSE) :].strip() == ""
        ok = ordered and between and tail and answer is not None and answer != ""
        think = full[t_open + len(THINK_OPEN) : t_close]
    elif THINK_CLOSE in full:
        think = full[: full.find(THINK_CLOSE)].replace(THINK_OPEN, "")
    else:
        think = full.replace(THINK_OPEN, "")
    return Parsed(think=think.strip(), answer=answer, format_ok=ok)
