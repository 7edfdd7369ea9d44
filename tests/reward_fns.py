"""Deliberately broken reward functions for the fault tests (loaded as 'tests.reward_fns:NAME')."""

import time


def raises(example, completion):
    raise RuntimeError("boom")


def hangs(example, completion):
    time.sleep(30)
    return 1.0


def sometimes_raises(example, completion):
    if len(completion) % 2:
        raise ValueError("odd length")
    return 1.0, {"custom": 1.0}


def nan(example, completion):
    return float("nan")
