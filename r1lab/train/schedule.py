"""Learning-rate schedules: linear warm-up, then constant or cosine decay to a floor.

    lr_at(step, peak=1e-4, warmup=10, total=150, schedule="cosine")

R1's distillation and r1lab's pretraining decay to 1/10 of the peak (``floor = 0.1``). Steps
count from 0; step ``warmup - 1`` is the first at the peak.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_at(step: int, peak: float, warmup: int, total: int, schedule: str = "constant", floor: float = 0.1) -> float:
    """lr(step) = peak·(step+1)/warmup during warm-up; then peak (constant) or
    peak·(floor + (1 − floor)·½(1 + cos(π·p))) with p = (step − warmup)/(total − warmup) (cosine)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return peak
