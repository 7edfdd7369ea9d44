"""Driving reward per rollout, Plan-R1's structure: safety gates multiplying a weighted sum.

    r = g_collision · g_road · (w_p·P + w_t·TTC + w_c·C + w_s·S) / (w_p + w_t + w_c + w_s)

over the T control steps of one episode (dt = 1 / CONTROL_HZ):

    g_collision = 0 if the ego crashed (or the simulator failed), else 1
    g_road      = 0 if the ego was off the road for more than ``offroad_steps`` steps, else 1
    P   progress  = clip(Σ_t v_t cos(ψ_t − ψ_lane) dt / (v_cruise · duration), 0, 1)
    TTC           = share of steps with time-to-collision to the vehicle ahead ≥ ttc_min
    C   comfort   = share of steps with |a| ≤ a_max, |jerk| ≤ j_max and |yaw rate| ≤ ω_max
    S   speed     = share of steps with v ≤ the scenario's speed limit

Plan-R1 (2025) scores its planner with the nuPlan-style gates and weights 5 (progress),
5 (TTC), 2 (comfort), 2 (speed limit); those are the defaults. Differences: progress is
measured along the lane against a cruise speed (highway-env has no expert route length), and
an episode that ends early scores its progress over the full duration, so stopping is never
a way to avoid risk for free; one that reaches its destination (urban) scores full progress. A crash gives 0 whatever else happened ("collision −−").

Every component is returned for logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RewardWeights:
    progress: float = 5.0
    ttc: float = 5.0
    comfort: float = 2.0
    speed: float = 2.0
    ttc_min: float = 2.0  # s
    accel_max: float = 4.0  # m/s²
    jerk_max: float = 8.0  # m/s³
    yaw_rate_max: float = 0.6  # rad/s
    offroad_steps: int = 2


DEFAULT_WEIGHTS = RewardWeights()


def episode_reward(trace: dict[str, Any], w: RewardWeights = DEFAULT_WEIGHTS, dt: float = 0.2
                   ) -> tuple[float, dict[str, float]]:
    """(reward, components) of one episode's ``Episode.summary()`` trace (arrays of T steps)."""
    speed = np.asarray(trace["speed"], dtype=np.float64)
    steps = len(speed)
    if steps == 0 or trace.get("failed"):
        comps = dict(progress=0.0, ttc=0.0, comfort=0.0, speed=0.0, collision=float(bool(trace.get("crashed"))),
                     on_road=0.0, gate=0.0, failed=float(bool(trace.get("failed"))))
        return 0.0, comps
    accel = np.asarray(trace["accel"], dtype=np.float64)
    jerk = np.diff(accel, prepend=accel[0]) / dt
    yaw = np.asarray(trace["yaw_rate"], dtype=np.float64)
    ttc = np.asarray(trace["ttc"], dtype=np.float64)
    on_road = np.asarray(trace["on_road"], dtype=bool)

    progress = float(np.clip(np.sum(trace["progress"]) / (trace["cruise"] * trace["duration"]), 0.0, 1.0))
    if trace.get("arrived"):  # reached the end of its route (urban, roundabout): full progress
        progress = 1.0
    ttc_ok = float(np.mean(ttc >= w.ttc_min))
    comfort = float(np.mean((np.abs(accel) <= w.accel_max) & (np.abs(jerk) <= w.jerk_max)
                            & (np.abs(yaw) <= w.yaw_rate_max)))
    legal = float(np.mean(speed <= trace["speed_limit"] + 1e-6))
    crashed = bool(trace["crashed"])
    road_ok = int(np.sum(~on_road)) <= w.offroad_steps
    gate = float((not crashed) and road_ok)
    total = w.progress + w.ttc + w.comfort + w.speed
    weighted = (w.progress * progress + w.ttc * ttc_ok + w.comfort * comfort + w.speed * legal) / total
    comps = dict(progress=progress, ttc=ttc_ok, comfort=comfort, speed=legal, collision=float(crashed),
                 on_road=float(road_ok), gate=gate, failed=0.0)
    return gate * weighted, comps
