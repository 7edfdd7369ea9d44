"""Waypoint tracker for highway-env's kinematic bicycle: pure-pursuit steering + proportional speed control.

The planner emits a ``Plan``: K waypoints in world coordinates, each with a target time (seconds since the
plan started, at ``Plan.start``). Every control step ``track`` turns the plan and the vehicle state into
(acceleration [m/s^2], steering [rad]); ``to_env_action`` maps those into highway-env's normalised
``ContinuousAction`` in [-1, 1]^2 (the inverse of the ``utils.lmap`` in ``ContinuousAction.get_action``).

Vehicle model (``highway_env.vehicle.kinematics.Vehicle.step``): slip beta = atan(tan(delta) / 2), heading
rate = v sin(beta) / (LENGTH / 2) = v cos(beta) tan(delta) / LENGTH, i.e. the standard centre-of-gravity
bicycle with l_f = l_r = LENGTH / 2, so the wheelbase is L = LENGTH = 5 m.

Steering (pure pursuit, from the rear axle r = position - (L/2) e_heading, which in this model moves exactly
along the heading, at v cos(beta), on a circle of radius L / tan(delta)): lookahead Ld = clip(k_ld v, ld_min,
ld_max); the target is the first point of the polyline [r] + (waypoints not yet passed) at Euclidean distance
Ld from r; alpha is its bearing in the vehicle frame and

    delta = atan(2 L sin(alpha) / Ld),    clipped to +-max_steer.

Speed: v_ref(t) is the speed implied by the waypoint timing (each segment's length / duration, placed at the
segment's mid-time, linearly interpolated, held beyond the ends; exact for constant-acceleration plans), or
``Plan.speeds`` interpolated at the waypoint times when given, and

    a = kp (v_ref - v),                   clipped to +-max_accel.

Differences from textbook pure pursuit: the lookahead is taken on a short planner polyline, not a fixed
reference path: waypoints behind the vehicle's projection are dropped and the rear axle is prepended, so the
target is well defined even off the path; if the whole polyline lies inside the lookahead circle its last
segment is extended straight; a target behind (|alpha| > 90 deg) gives full lock towards it; speed comes from
the waypoint timing. Pursuing from highway-env's ``position`` (the centre) instead of the rear axle would
leave a steady offset of ~ L Ld / (2 R) inside a curve of radius R (0.38 m at R = 60 m, 15 m/s, measured).

Linearised on a straight path (lateral error e, heading error psi) the loop is e'' + (2v/Ld) e' + (2v^2/Ld^2) e
= 0: damping 1/sqrt(2) and natural frequency sqrt(2)/k_ld = 2.4 rad/s for k_ld = 0.6 s, at any speed above
ld_min / k_ld. Tests (tests/test_driving_control.py) check hand-worked numbers and close the loop with
highway-env's real ``Vehicle`` at 15 Hz: offset start on a straight, a 60 m circle, a 25 m/s speed target, and
a 4 m lane change. Measured (tolerance): straight 1.5 m / 10 deg at 20 m/s, |e| 0.0004 m after 5 s (0.05);
circle R = 60 m at 15 m/s, max |e| 0.03 m (0.1); 15 -> 25 m/s within 0.5 m/s by 2.6 s (3 s); lane change
4 m over 40 m at 20 m/s, max |e| 0.23 m (0.35).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrackerGains:
    """Gains and limits; defaults match highway-env's ContinuousAction ranges and Vehicle.LENGTH."""

    k_ld: float = 0.6  # lookahead time [s]: Ld = k_ld * v
    ld_min: float = 4.0  # [m], used below ~6.7 m/s
    ld_max: float = 25.0  # [m], reached at ~42 m/s (above Vehicle.MAX_SPEED)
    kp: float = 1.5  # speed gain [1/s]: 0.67 s time constant
    max_accel: float = 5.0  # [m/s^2]
    max_steer: float = math.pi / 4  # [rad]
    wheelbase: float = 5.0  # [m]


@dataclass(frozen=True)
class Plan:
    """K waypoints ``points`` (K, 2) [m, world] reached at ``times`` (K,) [s since the plan started at ``start``]."""

    start: np.ndarray
    times: np.ndarray
    points: np.ndarray
    speeds: np.ndarray | None = None  # optional explicit target speed at each waypoint (K,) [m/s]

    def __post_init__(self) -> None:
        start = np.asarray(self.start, dtype=np.float64).reshape(2)
        times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        if len(times) == 0 or len(times) != len(points):
            raise ValueError(f"need K >= 1 waypoints with one time each, got {len(points)} and {len(times)}")
        if np.any(np.diff(np.concatenate([[0.0], times])) <= 0):
            raise ValueError("times must be positive and strictly increasing")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "points", points)
        if self.speeds is not None:
            speeds = np.asarray(self.speeds, dtype=np.float64).reshape(-1)
            if len(speeds) != len(times):
                raise ValueError(f"speeds has {len(speeds)} entries for {len(times)} waypoints")
            object.__setattr__(self, "speeds", speeds)


def lookahead_distance(speed: float, gains: TrackerGains) -> float:
    return float(np.clip(gains.k_ld * abs(speed), gains.ld_min, gains.ld_max))


def _exit_point(p: np.ndarray, a: np.ndarray, d: np.ndarray, ld: float) -> np.ndarray:
    """Point a + s d (largest s) at distance ld from p, for a inside the circle."""
    f = a - p
    dd, fd = float(d @ d), float(f @ d)
    s = (-fd + math.sqrt(max(fd * fd - dd * (float(f @ f) - ld * ld), 0.0))) / dd
    return a + s * d


def lookahead_point(position: np.ndarray, heading: float, path: np.ndarray, ld: float) -> np.ndarray:
    """First point at distance ``ld`` on [position] + (points of ``path`` beyond the vehicle's projection)."""
    p = np.asarray(position, dtype=np.float64).reshape(2)
    path = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    keep = path
    if len(path) >= 2:  # drop the waypoints before the closest segment (already passed)
        a, d = path[:-1], np.diff(path, axis=0)
        dd = np.einsum("ij,ij->i", d, d)
        s = np.clip(np.einsum("ij,ij->i", p - a, d) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
        j = int(np.argmin(np.linalg.norm(a + s[:, None] * d - p, axis=1)))
        keep = path[j:] if s[j] <= 0.0 else path[j + 1 :]
    poly = np.vstack([p, keep])
    for a, b in zip(poly[:-1], poly[1:]):
        if np.linalg.norm(b - p) >= ld:
            return _exit_point(p, a, b - a, ld)
    # the whole polyline is inside the circle: extend the last segment of the path straight
    u = path[-1] - path[-2] if len(path) >= 2 else poly[-1] - p
    if not np.any(u):
        u = poly[-1] - p if np.any(poly[-1] - p) else np.array([math.cos(heading), math.sin(heading)])
    return _exit_point(p, poly[-1], u / np.linalg.norm(u), ld)


def pure_pursuit(
    position: np.ndarray, heading: float, speed: float, path: np.ndarray, gains: TrackerGains
) -> tuple[float, np.ndarray]:
    """Steering [rad] towards the lookahead point on ``path`` (N, 2); returns (steering, target point)."""
    ld = lookahead_distance(speed, gains)
    c, s = math.cos(heading), math.sin(heading)
    rear = rear_axle(position, heading, gains)
    target = lookahead_point(rear, heading, path, ld)
    dx, dy = target - rear
    return steering_for(math.atan2(-s * dx + c * dy, c * dx + s * dy), ld, gains), target


def rear_axle(position: np.ndarray, heading: float, gains: TrackerGains) -> np.ndarray:
    """highway-env's ``position`` is the centre (l_f = l_r = L / 2); its rear axle moves along the heading."""
    half = 0.5 * gains.wheelbase
    return np.asarray(position, dtype=np.float64).reshape(2) - half * np.array([math.cos(heading), math.sin(heading)])


def steering_for(alpha: float, ld: float, gains: TrackerGains) -> float:
    """delta = atan(2 L sin(alpha) / Ld), clipped; a target behind (|alpha| > 90 deg) gives full lock towards it."""
    if abs(alpha) > math.pi / 2:
        return math.copysign(gains.max_steer, alpha)
    return float(np.clip(math.atan(2.0 * gains.wheelbase * math.sin(alpha) / ld), -gains.max_steer, gains.max_steer))


def reference_speed(plan: Plan, t: float) -> float:
    """v_ref [m/s] at ``t`` s since the plan started: explicit ``plan.speeds`` or implied by the timing."""
    if plan.speeds is not None:
        return float(np.interp(t, plan.times, plan.speeds))
    pts = np.vstack([plan.start, plan.points])
    tt = np.concatenate([[0.0], plan.times])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1) / np.diff(tt)
    return float(np.interp(t, 0.5 * (tt[:-1] + tt[1:]), seg))


def speed_command(speed: float, v_ref: float, gains: TrackerGains) -> float:
    """a = kp (v_ref - v), clipped to +-max_accel."""
    return float(np.clip(gains.kp * (v_ref - speed), -gains.max_accel, gains.max_accel))


def track(
    position: np.ndarray, heading: float, speed: float, t: float, plan: Plan, gains: TrackerGains | None = None
) -> tuple[float, float]:
    """(acceleration [m/s^2], steering [rad]) for the vehicle state at ``t`` s since the plan started."""
    gains = gains or TrackerGains()
    steering, _ = pure_pursuit(position, heading, speed, np.vstack([plan.start, plan.points]), gains)
    return speed_command(speed, reference_speed(plan, t), gains), steering


def to_env_action(
    acceleration: float,
    steering: float,
    acceleration_range: tuple[float, float] = (-5.0, 5.0),
    steering_range: tuple[float, float] = (-math.pi / 4, math.pi / 4),
) -> np.ndarray:
    """Normalised ContinuousAction [a, delta] in [-1, 1]^2: the inverse of lmap(x, [-1, 1], range)."""

    def unmap(v: float, r: tuple[float, float]) -> float:
        return -1.0 + 2.0 * (v - r[0]) / (r[1] - r[0])

    x = [unmap(acceleration, acceleration_range), unmap(steering, steering_range)]
    return np.clip(np.array(x, dtype=np.float64), -1.0, 1.0)
