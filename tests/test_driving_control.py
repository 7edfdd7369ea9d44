"""Tests for r1lab.driving.control: hand-worked numbers, then closed loops on highway-env's real Vehicle.

Closed loops run highway-env's kinematic ``Vehicle`` at its default 15 Hz (dt = 1/15 s) with the default
``TrackerGains``. Measured (highway-env 1.12.1) -> tolerance asserted:
  straight, 1.5 m offset + 10 deg heading error at 20 m/s: |e| 0.0003 m at 5 s, max over 5-10 s 0.0004 m
      (< 0.05 m), heading < 0.01 deg (< 0.5 deg), overshoot 0.10 m (< 0.3 m), |e| < 0.2 m from 1.1 s (< 2 s);
  circle R = 60 m (CircularLane) at 15 m/s, replanned at 1 Hz: mean |e| 0.028 m (< 0.06), max 0.032 m (< 0.1);
  speed 15 -> 25 m/s: within 0.5 m/s from 2.6 s (asserted from 3 s), a <= 5 m/s^2, no overshoot;
  lane change 4 m over 40 m at 20 m/s, replanned at 3 Hz: max |e| 0.23 m (< 0.35 m), final offset < 0.05 m.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("highway_env")

from highway_env import utils  # noqa: E402
from highway_env.envs.common.action import ContinuousAction  # noqa: E402
from highway_env.road.lane import CircularLane, StraightLane  # noqa: E402
from highway_env.road.road import Road, RoadNetwork  # noqa: E402
from highway_env.vehicle.kinematics import Vehicle  # noqa: E402

from r1lab.driving.control import (  # noqa: E402
    Plan,
    TrackerGains,
    lookahead_distance,
    lookahead_point,
    pure_pursuit,
    rear_axle,
    reference_speed,
    speed_command,
    steering_for,
    to_env_action,
    track,
)

DT = 1 / 15
G = TrackerGains()


def _road(lane) -> Road:
    net = RoadNetwork()
    net.add_lane("a", "b", lane)
    return Road(net)


def _step(vehicle: Vehicle, plan: Plan, t: float) -> tuple[float, float]:
    a, d = track(vehicle.position, vehicle.heading, vehicle.speed, t, plan, G)
    vehicle.act({"acceleration": a, "steering": d})
    vehicle.step(DT)
    return a, d


# ---------------------------------------------------------------- hand-worked numbers


def test_wheelbase_is_vehicle_length() -> None:
    """highway-env's Vehicle at constant delta: its rear axle circles at radius L / tan(delta), L = 5 m."""
    assert Vehicle.LENGTH == G.wheelbase == 5.0
    v = Vehicle(None, [0.0, 0.0], 0.0, 10.0)
    v.act({"acceleration": 0.0, "steering": math.atan(5.0 / 50.0)})
    centre = rear_axle(v.position, v.heading, G) + np.array([0.0, 50.0])
    for _ in range(500):  # 5 s, 50 m of arc
        v.step(0.01)
        assert np.linalg.norm(rear_axle(v.position, v.heading, G) - centre) == pytest.approx(50.0, abs=0.05)


def test_lookahead_distance_clips() -> None:
    assert lookahead_distance(20.0, G) == pytest.approx(12.0)
    assert lookahead_distance(2.0, G) == 4.0
    assert lookahead_distance(100.0, G) == 25.0


def test_straight_ahead_steers_zero() -> None:
    steering, target = pure_pursuit(np.array([0.0, 0.0]), 0.0, 20.0, np.array([[0.0, 0.0], [50.0, 0.0]]), G)
    assert steering == 0.0
    np.testing.assert_allclose(target, [-2.5 + 12.0, 0.0])  # rear axle at x = -2.5, Ld = 12


@pytest.mark.parametrize("heading", [0.0, 1.0, -2.5])
def test_known_alpha_and_ld(heading: float) -> None:
    """Rear axle at the origin, 10 m/s (Ld = 6 m), path at 30 deg: delta = atan(2 * 5 * 0.5 / 6) = 0.69474."""
    e = np.array([math.cos(heading), math.sin(heading)])
    position = 2.5 * e
    ray = np.array([math.cos(heading + math.pi / 6), math.sin(heading + math.pi / 6)])
    steering, target = pure_pursuit(position, heading, 10.0, np.array([0.0 * ray, 20.0 * ray]), G)
    np.testing.assert_allclose(target, 6.0 * ray, atol=1e-12)
    assert steering == pytest.approx(math.atan(5.0 / 6.0)) and steering == pytest.approx(0.694738, abs=1e-6)
    mirrored = np.array([math.cos(heading - math.pi / 6), math.sin(heading - math.pi / 6)])
    right, _ = pure_pursuit(position, heading, 10.0, np.array([0.0 * mirrored, 20.0 * mirrored]), G)
    assert right == pytest.approx(-steering)


def test_steering_clips_and_full_lock_behind() -> None:
    assert steering_for(math.radians(80), 4.0, G) == pytest.approx(math.pi / 4)  # atan(2.46) > 45 deg
    assert steering_for(math.radians(-120), 12.0, G) == -math.pi / 4  # sin would say small; full lock instead
    assert steering_for(math.radians(179), 12.0, G) == math.pi / 4


def test_lookahead_point_drops_passed_waypoints() -> None:
    path = np.array([[-10.0, 0.0], [0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    # rear at (5, 1): (10, 0) is sqrt(26) < 6 away, so the target lies on (10,0)-(20,0) at x = 5 + sqrt(35)
    np.testing.assert_allclose(lookahead_point(np.array([5.0, 1.0]), 0.0, path, 6.0), [5 + math.sqrt(35), 0.0])


def test_lookahead_point_extends_last_segment() -> None:
    # the whole polyline [(0,3), (0,0), (2,0)] is inside the 5 m circle: extend along +x, (x, 0) with x^2 + 9 = 25
    np.testing.assert_allclose(lookahead_point(np.array([0.0, 3.0]), 0.0, np.array([[0, 0], [2, 0]]), 5.0), [4, 0])
    # single waypoint inside the circle: aim through it
    np.testing.assert_allclose(lookahead_point(np.zeros(2), 0.0, np.array([[0.0, 2.0]]), 5.0), [0, 5], atol=1e-12)


def test_lookahead_point_is_at_ld() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p, path, ld = rng.normal(size=2) * 5, np.cumsum(rng.normal(size=(6, 2)) * 4, axis=0), rng.uniform(2, 20)
        assert np.linalg.norm(lookahead_point(p, 0.3, path, ld) - p) == pytest.approx(ld)


def test_to_env_action_inverts_lmap() -> None:
    np.testing.assert_allclose(to_env_action(-5.0, -math.pi / 4), [-1, -1])
    np.testing.assert_allclose(to_env_action(5.0, math.pi / 4), [1, 1])
    np.testing.assert_allclose(to_env_action(0.0, 0.0), [0, 0])
    np.testing.assert_allclose(to_env_action(2.5, -math.pi / 8), [0.5, -0.5])
    np.testing.assert_allclose(to_env_action(9.0, -2.0), [1, -1])  # clipped
    np.testing.assert_allclose(to_env_action(-0.5, 0.1, (-3.0, 2.0), (-0.2, 0.2)), [0.0, 0.5])
    assert to_env_action(1.0, 0.2).dtype == np.float64
    env_action = ContinuousAction(None)
    for a, d in [(3.1, 0.3), (-4.9, -0.7), (0.0, 0.01)]:
        out = env_action.get_action(to_env_action(a, d))
        assert out["acceleration"] == pytest.approx(a) and out["steering"] == pytest.approx(d)
        assert utils.lmap(to_env_action(a, d)[0], [-1, 1], [-5, 5]) == pytest.approx(a)


def test_reference_speed_from_timing() -> None:
    plan = Plan(start=[0, 0], times=[1, 2, 3], points=[[10, 0], [30, 0], [60, 0]])  # 10, 20, 30 m/s segments
    assert reference_speed(plan, 0.2) == pytest.approx(10.0)  # held before the first mid-time (0.5 s)
    assert reference_speed(plan, 1.0) == pytest.approx(15.0)
    assert reference_speed(plan, 2.5) == pytest.approx(30.0)
    assert reference_speed(plan, 9.0) == pytest.approx(30.0)  # held beyond the horizon
    tk = 0.5 * np.arange(1, 7)  # constant acceleration 2 m/s^2 from 10 m/s, on a diagonal: exact
    d = 10 * tk + tk**2
    accel_plan = Plan(start=[1, 1], times=tk, points=np.stack([1 + 0.6 * d, 1 + 0.8 * d], axis=1))
    for t in [0.25, 1.0, 1.7, 2.75]:
        assert reference_speed(accel_plan, t) == pytest.approx(10 + 2 * t)


def test_reference_speed_explicit_and_validation() -> None:
    plan = Plan(start=[0, 0], times=[1, 2, 3], points=[[1, 0], [2, 0], [3, 0]], speeds=[10, 20, 30])
    assert [reference_speed(plan, t) for t in (0.5, 1.5, 4.0)] == pytest.approx([10, 15, 30])
    with pytest.raises(ValueError):
        Plan(start=[0, 0], times=[1, 1], points=[[1, 0], [2, 0]])
    with pytest.raises(ValueError):
        Plan(start=[0, 0], times=[0, 1], points=[[1, 0], [2, 0]])
    with pytest.raises(ValueError):
        Plan(start=[0, 0], times=[1, 2], points=[[1, 0], [2, 0]], speeds=[1.0])


def test_speed_command_hand_numbers() -> None:
    assert speed_command(20.0, 22.0, G) == pytest.approx(3.0)
    assert speed_command(20.0, 19.0, G) == pytest.approx(-1.5)
    assert speed_command(20.0, 30.0, G) == 5.0
    assert speed_command(20.0, 10.0, G) == -5.0


# ---------------------------------------------------------------- closed loops on highway-env's Vehicle


@pytest.mark.parametrize("y0, h0, peak", [(1.5, 10.0, 0.3), (-1.5, 10.0, 0.3), (1.5, 0.0, 0.3), (0.0, -10.0, 0.6)])
def test_straight_offset_start(y0: float, h0: float, peak: float) -> None:
    """Replanned every step: 8 waypoints every 10 m along y = 0 ahead of the vehicle, 0.5 s apart (20 m/s).

    ``peak`` bounds the overshoot past the line (measured 0.10, 0.19, 0.10 m), or for a start on the line with
    only a heading error, the excursion it causes (0.50 m)."""
    vehicle = Vehicle(_road(StraightLane([0, 0], [1000, 0])), [0.0, y0], math.radians(h0), 20.0)
    ys, hs = [], []
    for _ in range(int(10 / DT)):
        x = vehicle.position[0]
        plan = Plan(start=[x, 0.0], times=0.5 * np.arange(1, 9), points=[[x + 10 * i, 0] for i in range(1, 9)])
        _step(vehicle, plan, 0.0)
        ys.append(vehicle.lane.local_coordinates(vehicle.position)[1])
        hs.append(vehicle.heading)
    ys, hs, n5 = np.array(ys), np.degrees(np.abs(hs)), int(round(5 / DT)) - 1
    assert np.all(np.abs(ys[n5:]) < 0.05) and np.all(hs[n5:] < 0.5)  # from 5 s on: 0.0004 m, 0.003 deg
    assert np.abs(ys[int(round(2 / DT)) - 1 :]).max() < 0.2  # within 0.2 m by 2 s (measured <= 1.07 s)
    assert (-np.sign(y0) * ys).max() < peak if y0 else np.abs(ys).max() < peak
    assert vehicle.speed == pytest.approx(20.0, abs=1e-6)


def test_circle() -> None:
    """CircularLane R = 60 m at 15 m/s; a plan of 10 waypoints 0.5 s apart on the lane every second."""
    lane = CircularLane([0, 0], 60.0, -math.pi / 2, 3 * math.pi)
    vehicle = Vehicle(_road(lane), lane.position(0, 0), lane.heading_at(0), 15.0)
    errors = []
    for k in range(int(30 / DT)):
        if k % 15 == 0:
            s0, t0 = lane.local_coordinates(vehicle.position)[0], k * DT
            tk = 0.5 * np.arange(1, 11)
            plan = Plan(start=lane.position(s0, 0), times=tk, points=[lane.position(s0 + 15 * t, 0) for t in tk])
        _step(vehicle, plan, k * DT - t0)
        errors.append(abs(lane.local_coordinates(vehicle.position)[1]))
    settled = np.array(errors[int(5 / DT) :])
    assert settled.mean() < 0.06 and settled.max() < 0.1 and max(errors) < 0.1
    assert vehicle.speed == pytest.approx(15.0, abs=0.05)


@pytest.mark.parametrize("explicit", [False, True])
def test_speed_tracking(explicit: bool) -> None:
    """Waypoints every 0.5 s spaced for 25 m/s (or explicit 25 m/s speeds), vehicle starts at 15 m/s."""
    tk = 0.5 * np.arange(1, 41)
    plan = Plan(start=[0, 0], times=tk, points=np.stack([25 * tk, 0 * tk], 1), speeds=25 + 0 * tk if explicit else None)
    vehicle = Vehicle(None, [0.0, 0.0], 0.0, 15.0)
    speeds, accels = [], []
    for k in range(int(10 / DT)):
        accels.append(_step(vehicle, plan, k * DT)[0])
        speeds.append(vehicle.speed)
    speeds = np.array(speeds)
    assert max(accels) <= G.max_accel and accels[0] == G.max_accel
    assert np.all(np.abs(speeds[int(3 / DT) :] - 25) < 0.5) and speeds.max() <= 25.0 + 1e-9
    assert abs(speeds[-1] - 25) < 1e-3 and vehicle.position[1] == 0.0


def test_lane_change() -> None:
    """y_ref(x) = 2 (1 - cos(pi (x - 100) / 40)) on 100 <= x <= 140 (4 m over 40 m) at 20 m/s, replanned at 3 Hz."""

    def y_ref(x: np.ndarray) -> np.ndarray:
        return 2.0 * (1 - np.cos(np.pi * np.clip(x - 100.0, 0.0, 40.0) / 40.0))

    xs = np.arange(0.0, 400.0, 0.01)
    ref = np.stack([xs, y_ref(xs)], axis=1)
    vehicle = Vehicle(_road(StraightLane([0, 0], [1000, 0])), [0.0, 0.0], 0.0, 20.0)
    errors = []
    for k in range(int(12 / DT)):
        if k % 5 == 0:
            x0, t0, tk = vehicle.position[0], k * DT, 0.5 * np.arange(1, 11)
            plan = Plan(start=[x0, y_ref(x0)], times=tk, points=np.stack([x0 + 20 * tk, y_ref(x0 + 20 * tk)], 1))
        _step(vehicle, plan, k * DT - t0)
        i = int(vehicle.position[0] / 0.01)
        errors.append(np.linalg.norm(ref[max(i - 2000, 0) : i + 2000] - vehicle.position, axis=1).min())
    assert max(errors) < 0.35
    assert abs(vehicle.position[1] - 4.0) < 0.05 and abs(vehicle.heading) < math.radians(0.5)
