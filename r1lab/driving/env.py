"""Driving scenarios on highway-env: three categories, ego-frame scene features, a waypoint
codebook in the lane frame, and one episode that a planner or the env's IDM/MOBIL driver drives.

Categories (the seed asked for highway, urban and parking):

    highway     highway-fast-v0, 3 lanes, ~15 vehicles, 25 m/s cruise
    urban       intersection-v0 (unsignalised four-way crossing, random turn), 9 m/s
    roundabout  roundabout-v0, two-lane ring with entries and exits, 10 m/s

Parking is left out: its goals need reversing and 90° manoeuvres at walking speed, which forward
waypoints tracked by pure pursuit cannot express, and its observation is a goal dict rather
than the kinematics of other vehicles. The roundabout keeps three lane-based scenes that one
waypoint codebook covers.

An action is an anchor of the codebook: a target speed and a lane shift (−1, 0, +1). From the
ego's state it becomes K waypoints in the lane frame (K = 6, every 0.5 s):

    v(t) = v0 + clip(v* − v0, −a_p t, a_p t)          (a_p = 2.5 m/s² planning acceleration)
    s(t) = ∫ v, along the ego's route (the next lanes are taken from its route)
    d(t) = d0 · (1 − smoothstep(t / T_lat))            (T_lat = 2.5 s, d0 = ego offset in the
                                                        target lane's frame)

and each waypoint (s, d) is mapped to the world by the lanes' own ``position(s, d)``. The
tracker (``control.py``) follows them for one decision period (1 s = 5 control steps) before the
policy decides again. Anchors whose target lane does not exist are masked.

Each control step records what the reward (``reward.py``) needs: speed, acceleration, yaw rate,
progress along the lane, on-road, crash, time-to-collision with the vehicle ahead. A simulator
exception ends the episode as a counted failure (``failed``), never the run.

Determinism: ``reset(seed)`` fixes the traffic; the same start and the same anchors give the
same trajectory (tested), which is how G rollouts share one start state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from r1lab.driving import control

CATEGORIES: tuple[str, ...] = ("highway", "urban", "roundabout")
SPEEDS: tuple[float, ...] = (0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0)  # anchor target speeds, m/s
SHIFTS: tuple[int, ...] = (-1, 0, 1)  # lane shift of an anchor
ANCHORS: tuple[tuple[float, int], ...] = tuple((v, s) for s in SHIFTS for v in SPEEDS)
N_ANCHORS = len(ANCHORS)
K_WAYPOINTS, WAYPOINT_DT = 6, 0.5
PLAN_ACCEL, LATERAL_TIME = 2.5, 2.5
CONTROL_HZ, DECISION_STEPS = 5, 5  # control at 5 Hz, one decision per second
N_OTHERS = 7  # nearby vehicles in the scene
EGO_FEATURES, OTHER_FEATURES = 7, 7  # no category and no per-category constant (speed limit):
# the expert-specialisation finding needs a router that is never told the category
SENSE_RANGE = 60.0  # m, features are scaled by it


@dataclass(frozen=True)
class Scenario:
    env_id: str
    config: dict
    cruise: float  # speed the progress term is measured against, m/s
    speed_limit: float  # speed compliance threshold, m/s
    destination: str | None = None  # route end for urban/roundabout


SCENARIOS: dict[str, Scenario] = {
    "highway": Scenario("highway-fast-v0", {"lanes_count": 3, "vehicles_count": 15}, 25.0, 30.0),
    "urban": Scenario(
        "intersection-v0", {"initial_vehicle_count": 6, "spawn_probability": 0.3, "destination": "o1"},
        9.0, 12.0, destination="o1",
    ),
    "roundabout": Scenario("r1lab-roundabout-v0", {}, 10.0, 14.0, destination="nxs"),
}


def _register_roundabout() -> None:
    """highway-env 1.12's RoundaboutEnv computes ``action in [0, 2]`` for its own reward, which
    raises for a continuous action (an array); r1lab computes its own reward, so this subclass
    only hands it a tuple."""
    import gymnasium as gym
    from highway_env.envs.roundabout_env import RoundaboutEnv

    if "r1lab-roundabout-v0" in gym.registry:
        return

    class ContinuousRoundabout(RoundaboutEnv):
        def _rewards(self, action):  # noqa: ANN001
            return super()._rewards(tuple(np.ravel(action)) if isinstance(action, np.ndarray) else action)

    gym.register("r1lab-roundabout-v0", entry_point=ContinuousRoundabout)


def make_env(category: str, duration: float, render: bool = False):
    """A highway-env environment of one category with continuous control at CONTROL_HZ."""
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the envs)

    if category not in SCENARIOS:
        raise ValueError(f"unknown driving category {category!r}; expected one of {', '.join(CATEGORIES)}")
    _register_roundabout()
    if render:  # headless pygame: offscreen surfaces, no audio, no session runtime dir. Not
        import os  # SDL_VIDEODRIVER=dummy: highway-env's viewer then draws nothing (black frames)
        import tempfile

        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    sc = SCENARIOS[category]
    config = {
        "observation": {
            "type": "Kinematics", "vehicles_count": N_OTHERS + 1, "absolute": False, "normalize": False,
            "features": ["presence", "x", "y", "vx", "vy", "cos_h", "sin_h"], "see_behind": True,
        },
        "action": {"type": "ContinuousAction", "acceleration_range": [-5.0, 5.0],
                   "steering_range": [-math.pi / 4, math.pi / 4], "speed_range": [0.0, 35.0]},
        "policy_frequency": CONTROL_HZ, "simulation_frequency": CONTROL_HZ * 2,
        "duration": duration, "offroad_terminal": False, "offscreen_rendering": render, **sc.config,
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(sc.env_id, config=config, render_mode="rgb_array" if render else None)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class Episode:
    """One episode of one category from one seed, driven a decision at a time.

    ``decide(anchor)`` runs DECISION_STEPS control steps tracking the anchor's waypoints;
    ``expert_decide()`` lets highway-env's IDM/MOBIL driver take the ego for the same period
    (behaviour-cloning labels and SSL logs). ``record`` holds the per-control-step trace.
    """

    category: str
    seed: int
    duration: float = 10.0
    render: bool = False
    expert: bool = False
    gains: control.TrackerGains = field(default_factory=control.TrackerGains)

    def __post_init__(self) -> None:
        self.env = make_env(self.category, self.duration, self.render)
        self.scenario = SCENARIOS[self.category]
        self.record: dict[str, list] = {k: [] for k in
                                        ("speed", "accel", "yaw_rate", "progress", "on_road", "ttc", "pos")}
        self.crashed = self.failed = self.done = self.arrived = False
        self.error = ""
        self.frames: list[np.ndarray] = []
        self.plans: list[np.ndarray] = []
        self.route: list | None = None
        self.t = 0.0

    # ----------------------------------------------------------------- reset and observation
    def reset(self) -> dict[str, np.ndarray]:
        try:
            self.env.reset(seed=self.seed)
            u = self.env.unwrapped
            if self.scenario.destination is not None:
                path = u.road.network.shortest_path(u.vehicle.lane_index[1], self.scenario.destination)
                self.route = [u.vehicle.lane_index] + [(path[i], path[i + 1], None) for i in range(len(path) - 1)]
            if self.expert:
                self._install_expert()
            self._snap()
            return self.observe()
        except Exception as exc:  # noqa: BLE001  (a simulator that throws ends the episode, not the run)
            return self._fail(exc)

    def _install_expert(self) -> None:
        from highway_env.vehicle.behavior import IDMVehicle

        u = self.env.unwrapped
        ego = u.vehicle
        idm = IDMVehicle(u.road, ego.position, heading=ego.heading, speed=ego.speed,
                         target_speed=self.scenario.cruise, route=list(self.route) if self.route else None)
        if self.route:
            idm.plan_route_to(self.scenario.destination)
        u.road.vehicles[u.road.vehicles.index(ego)] = idm
        u.controlled_vehicles[0] = idm

    @property
    def ego(self):
        return self.env.unwrapped.vehicle

    def _lane(self, index=None):
        return self.env.unwrapped.road.network.get_lane(index or self.ego.lane_index)

    def observe(self) -> dict[str, np.ndarray]:
        """Ego-frame features: ``ego`` (EGO_FEATURES,), ``others`` (N_OTHERS, OTHER_FEATURES),
        ``present`` (N_OTHERS,) bool and ``valid`` (N_ANCHORS,) bool (anchors whose lane exists)."""
        ego, lane = self.ego, self._lane()
        s, d = lane.local_coordinates(ego.position)
        dh = _wrap(ego.heading - lane.heading_at(s))
        valid = self.valid_anchors()
        left, right = valid[ANCHORS.index((SPEEDS[0], -1))], valid[ANCHORS.index((SPEEDS[0], 1))]
        ego_f = np.array([ego.speed / 30.0, d / 4.0, math.sin(dh), math.cos(dh), float(left), float(right),
                          1.0 - self.t / self.duration], dtype=np.float32)
        others = np.zeros((N_OTHERS, OTHER_FEATURES), dtype=np.float32)
        present = np.zeros(N_OTHERS, dtype=bool)
        c, sn = math.cos(ego.heading), math.sin(ego.heading)
        rot = np.array([[c, sn], [-sn, c]])
        for i, v in enumerate(self._neighbours()):
            rel = rot @ (v.position - ego.position)
            vel = rot @ (v.velocity - ego.velocity)
            h = _wrap(v.heading - ego.heading)
            others[i] = [rel[0] / SENSE_RANGE, rel[1] / SENSE_RANGE, vel[0] / 30.0, vel[1] / 30.0,
                         math.cos(h), math.sin(h), 1.0]
            present[i] = True
        return {"ego": ego_f, "others": others, "present": present, "valid": valid}

    def _neighbours(self) -> list:
        ego = self.ego
        near = [(np.linalg.norm(v.position - ego.position), i, v)
                for i, v in enumerate(self.env.unwrapped.road.vehicles) if v is not ego]
        return [v for dist, _, v in sorted(near, key=lambda x: x[:2]) if dist < SENSE_RANGE][:N_OTHERS]

    # ----------------------------------------------------------------- the codebook
    def valid_anchors(self) -> np.ndarray:
        net = self.env.unwrapped.road.network
        a, b, i = self.ego.lane_index
        lanes = len(net.graph[a][b])
        ok = {s: 0 <= i + s < lanes for s in SHIFTS}
        return np.array([ok[s] for _, s in ANCHORS], dtype=bool)

    def anchor_plan(self, anchor: int) -> control.Plan:
        """The anchor's K waypoints in world coordinates (see the module docstring)."""
        v_star, shift = ANCHORS[anchor]
        net = self.env.unwrapped.road.network
        a, b, i = self.ego.lane_index
        index = (a, b, int(np.clip(i + shift, 0, len(net.graph[a][b]) - 1)))
        lane = net.get_lane(index)
        s0, d0 = lane.local_coordinates(self.ego.position)
        times = WAYPOINT_DT * np.arange(1, K_WAYPOINTS + 1)
        v0 = self.ego.speed
        dv = np.clip(v_star - v0, -PLAN_ACCEL * times, PLAN_ACCEL * times)
        # s(t) = ∫ v: accelerate at PLAN_ACCEL until v* is reached, then hold
        t_reach = abs(v_star - v0) / PLAN_ACCEL
        sign = np.sign(v_star - v0)
        tt = np.minimum(times, t_reach)
        dist = v0 * times + sign * PLAN_ACCEL * (tt * times - 0.5 * tt ** 2)
        dist = np.maximum(dist, 0.0)
        lat = d0 * (1.0 - smoothstep(times / LATERAL_TIME))
        # the lanes ahead along the route; start[j] = arc distance from the ego to lane j
        route = self._route_ahead()
        seq, start, total = [lane], [-s0], lane.length - s0
        while total < dist[-1] and len(seq) < 8:
            nxt = net.next_lane(index, route=route, position=seq[-1].position(seq[-1].length, 0.0))
            if nxt == index:
                break
            index = nxt
            seq.append(net.get_lane(nxt))
            start.append(total)
            total += seq[-1].length
        points = []
        for k in range(K_WAYPOINTS):
            j = max(j for j in range(len(seq)) if start[j] <= dist[k])
            points.append(seq[j].position(dist[k] - start[j], lat[k]))
        return control.Plan(start=self.ego.position.copy(), times=times, points=np.array(points),
                            speeds=v0 + dv)

    def _route_ahead(self) -> list | None:
        """The rest of the route from the ego's current road (``next_lane`` consumes it)."""
        if not self.route:
            return None
        here = self.ego.lane_index[:2]
        for j, step in enumerate(self.route):
            if step[:2] == here:
                return list(self.route[j:])
        return None

    # ----------------------------------------------------------------- driving
    def decide(self, anchor: int) -> tuple[dict[str, np.ndarray] | None, bool]:
        """Track ``anchor`` for one decision period; returns (observation, done)."""
        return self._period(anchor)

    def expert_decide(self) -> tuple[dict[str, np.ndarray] | None, bool]:
        """Let the IDM/MOBIL ego drive one decision period (``expert=True`` episodes)."""
        return self._period(None)

    def _period(self, anchor: int | None) -> tuple[dict[str, np.ndarray] | None, bool]:
        """DECISION_STEPS control steps: tracking the anchor's plan, or (None) the expert driving."""
        if self.done:
            return None, True
        try:
            plan = None if anchor is None else self.anchor_plan(anchor)
            if plan is not None:
                self.plans.append(np.vstack([plan.start[None], plan.points]))
            t0 = self.t
            for _ in range(DECISION_STEPS):
                action = (0.0, 0.0)  # ignored by the expert ego
                if plan is not None:
                    ego = self.ego
                    acc, steer = control.track(ego.position, ego.heading, ego.speed, self.t - t0, plan, self.gains)
                    action = tuple(control.to_env_action(acc, steer))
                self._step(action)
                if self.done:
                    break
            return (None if self.done else self.observe()), self.done
        except Exception as exc:  # noqa: BLE001  (a simulator that throws ends the episode, not the run)
            self._fail(exc)
            return None, True

    def expert_samples(self) -> list[tuple[dict[str, np.ndarray], int, float]]:
        """Drive a whole ``expert=True`` episode with IDM/MOBIL and label each decision with the
        anchor whose waypoints lie closest (mean squared distance) to where the expert then
        went: [(observation, anchor, error in m)]. Decisions whose future the episode cut off
        are compared on the waypoints it reached."""
        obs = self.reset()
        pending = []
        while obs is not None and not self.done:
            valid = obs["valid"]
            plans = [self.anchor_plan(a) if valid[a] else None for a in range(N_ANCHORS)]
            pending.append((obs, self.t, plans))
            obs, _ = self.expert_decide()
        if self.failed or not self.record["pos"]:
            return []
        pos = np.array(self.record["pos"])
        times = (np.arange(len(pos)) + 1) / CONTROL_HZ
        out = []
        for o, t0, plans in pending:
            keep = t0 + plans[ANCHORS.index((SPEEDS[0], 0))].times <= times[-1] + 1e-9
            if not keep.any():
                continue
            at = t0 + WAYPOINT_DT * np.arange(1, K_WAYPOINTS + 1)[keep]
            real = np.stack([np.interp(at, times, pos[:, 0]), np.interp(at, times, pos[:, 1])], 1)
            errs = [np.mean(np.sum((p.points[keep] - real) ** 2, 1)) if p is not None else np.inf for p in plans]
            best = int(np.argmin(errs))
            out.append((o, best, float(np.sqrt(errs[best]))))
        return out

    def _step(self, action: tuple[float, float]) -> None:
        prev_speed, prev_heading = self.ego.speed, self.ego.heading
        _, _, terminated, truncated, _ = self.env.step(action)
        self.t += 1.0 / CONTROL_HZ
        ego, dt = self.ego, 1.0 / CONTROL_HZ
        lane = self._lane()
        s, _ = lane.local_coordinates(ego.position)
        self.record["speed"].append(ego.speed)
        self.record["accel"].append((ego.speed - prev_speed) / dt)
        self.record["yaw_rate"].append(_wrap(ego.heading - prev_heading) / dt)
        self.record["progress"].append(ego.speed * math.cos(_wrap(ego.heading - lane.heading_at(s))) * dt)
        self.record["on_road"].append(bool(ego.on_road))
        self.record["ttc"].append(self._ttc())
        self.record["pos"].append(ego.position.copy())
        self.crashed = self.crashed or bool(ego.crashed)
        self.arrived = self.arrived or (bool(terminated) and not self.crashed)
        self._snap()
        if terminated or truncated or self.crashed or self.t >= self.duration - 1e-9:
            self.done = True

    def _ttc(self) -> float:
        """Time to collision with the nearest vehicle ahead in the ego's path (inf if none)."""
        ego = self.ego
        c, sn = math.cos(ego.heading), math.sin(ego.heading)
        best = math.inf
        for v in self._neighbours():
            dx, dy = v.position - ego.position
            ahead, side = c * dx + sn * dy, -sn * dx + c * dy
            if ahead <= 0 or abs(side) > 2.5:
                continue
            closing = ego.speed - (c * v.velocity[0] + sn * v.velocity[1])
            gap = ahead - ego.LENGTH
            if closing > 1e-6:
                best = min(best, max(gap, 0.0) / closing)
        return best

    def _snap(self) -> None:
        if self.render:
            frame = self.env.render()
            if frame is not None:
                self.frames.append(frame)

    def _fail(self, exc: Exception) -> None:
        self.failed = self.done = True
        self.error = f"{type(exc).__name__}: {exc}"[:200]
        return None

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass

    def summary(self) -> dict[str, Any]:
        """The trace as arrays, for ``reward.episode_reward`` (picklable, sent back by workers)."""
        out = {k: np.asarray(v, dtype=np.float64) for k, v in self.record.items() if k != "pos"}
        out.update(category=self.category, seed=self.seed, crashed=self.crashed, failed=self.failed, arrived=self.arrived,
                   error=self.error, duration=self.duration, t=self.t,
                   cruise=self.scenario.cruise, speed_limit=self.scenario.speed_limit)
        return out


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi
