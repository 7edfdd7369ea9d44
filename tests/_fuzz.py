"""Hypothesis strategies shared by the grader fuzz tests: texts that look like model output."""

from __future__ import annotations

from hypothesis import strategies as st

TOKENS = list("0123456789{}\\$#<>/.,:-+=*^() \naAbnswerisxfoed") + [
    "\\boxed{",
    "\\fbox{",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "####",
    "the answer is ",
    "A: ",
    "\\frac",
    "\\left(",
    "\\right)",
    "\\sqrt",
    "\\pi",
    "等等",
    "让我检查",
    "对",
    "不对",
    "3*5=15",
    "1,234.50",
    "x^{2}",
    "9^{9^{9}}",
]

model_like_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=300), model_like_text)
