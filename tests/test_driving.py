"""Driving (issue 14): scenarios, codebook, reward, rollouts, advantages, policy, update, command."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("highway_env", reason="the driving extra (highway-env) is not installed")

from r1lab.driving import env as E  # noqa: E402
from r1lab.driving.learn import UpdateSettings, advantages, category_advantages, update  # noqa: E402
from r1lab.driving.policy import DriverConfig, DriverPolicy, log_probs  # noqa: E402
from r1lab.driving.pool import EpisodePool  # noqa: E402
from r1lab.driving.reward import RewardWeights, episode_reward  # noqa: E402
from r1lab.driving.rollout import collect, expert_stats, mutual_information, train_starts  # noqa: E402

KEEP_20 = E.ANCHORS.index((20.0, 0))


def _drive(category: str, seed: int, anchors: list[int]) -> np.ndarray:
    ep = E.Episode(category, seed, duration=4.0)
    ep.reset()
    for a in anchors:
        ep.decide(a)
    ep.close()
    return np.array(ep.record["pos"])


@pytest.mark.parametrize("category", E.CATEGORIES)
def test_same_start_and_actions_replay_the_same_trajectory(category):
    anchors = [KEEP_20, E.ANCHORS.index((8.0, 0)), KEEP_20, E.ANCHORS.index((4.0, 0))]
    a, b = _drive(category, 7, anchors), _drive(category, 7, anchors)
    assert len(a) > 0 and np.array_equal(a, b)
    c = _drive(category, 8, anchors)
    assert len(c) != len(a) or not np.allclose(a, c)  # another seed is another scene


def test_anchor_plan_on_a_straight_highway_lane():
    ep = E.Episode("highway", 3, duration=4.0)
    ep.reset()
    ego = ep.ego
    lane = ep._lane()
    s0, d0 = lane.local_coordinates(ego.position)
    v0 = ego.speed
    plan = ep.anchor_plan(KEEP_20)
    # target speed 20 from v0: s(t) = v0 t + sign·a_p(min(t, t*) t − min(t, t*)²/2), d(t) = d0 (1 − smoothstep)
    t = plan.times
    tt = np.minimum(t, abs(20.0 - v0) / E.PLAN_ACCEL)
    s = v0 * t + np.sign(20.0 - v0) * E.PLAN_ACCEL * (tt * t - tt ** 2 / 2)
    expect = np.array([lane.position(s0 + si, d0 * (1 - E.smoothstep(np.array(ti / E.LATERAL_TIME))))
                       for si, ti in zip(s, t)])
    assert np.allclose(plan.points, expect, atol=1e-9)
    # a lane shift ends on the neighbouring lane's centre line once t ≥ T_lat
    valid = ep.valid_anchors()
    shift = 1 if valid[E.ANCHORS.index((20.0, 1))] else -1
    plan = ep.anchor_plan(E.ANCHORS.index((20.0, shift)))
    a, b, i = ego.lane_index
    target = ep.env.unwrapped.road.network.get_lane((a, b, i + shift))
    _, lat = target.local_coordinates(plan.points[-1])
    assert abs(lat) < 1e-6 and plan.times[-1] >= E.LATERAL_TIME
    ep.close()


def test_valid_anchors_mask_lanes_that_do_not_exist():
    ep = E.Episode("urban", 0, duration=2.0)
    ep.reset()
    valid = ep.valid_anchors()  # the intersection's approach has one lane per direction
    assert not valid[[k for k, (_, s) in enumerate(E.ANCHORS) if s != 0]].any()
    assert valid[[k for k, (_, s) in enumerate(E.ANCHORS) if s == 0]].all()
    ep.close()


def test_rendered_frames_are_not_blank():
    ep = E.Episode("urban", 4, duration=1.0, render=True)
    ep.reset()
    ep.decide(KEEP_20)
    assert len(ep.frames) >= 2 and all(f.ndim == 3 and f.std() > 5 for f in ep.frames)
    ep.close()


def test_simulator_exception_ends_the_episode_as_a_failure(monkeypatch):
    ep = E.Episode("highway", 1, duration=4.0)
    ep.reset()

    def boom(*a, **k):
        raise RuntimeError("simulator exploded")

    monkeypatch.setattr(ep.env, "step", boom)
    obs, done = ep.decide(KEEP_20)
    assert obs is None and done and ep.failed and "simulator exploded" in ep.error
    reward, comps = episode_reward(ep.summary())
    assert reward == 0.0 and comps["failed"] == 1.0
    assert ep.decide(KEEP_20) == (None, True)  # stepping a finished episode is a no-op


def _trace(**over):
    t = {"speed": [10.0] * 10, "accel": [0.0] * 10, "yaw_rate": [0.0] * 10, "progress": [2.0] * 10,
         "on_road": [True] * 10, "ttc": [math.inf] * 10, "crashed": False, "failed": False,
         "cruise": 10.0, "duration": 2.0, "speed_limit": 12.0}
    t.update(over)
    return t


def test_reward_hand_worked():
    w = RewardWeights()
    r, c = episode_reward(_trace(), w)  # 20 m in 2 s at cruise 10: progress 1, everything else 1
    assert r == pytest.approx(1.0) and c["gate"] == 1.0
    # half the progress, 3 of 10 steps with TTC < 2 s, 2 steps too fast: (5·.5 + 5·.7 + 2·1 + 2·.8) / 14
    r, c = episode_reward(_trace(progress=[1.0] * 10, ttc=[1.0] * 3 + [5.0] * 7,
                                 speed=[10.0] * 8 + [13.0] * 2), w)
    assert c["progress"] == pytest.approx(0.5) and c["ttc"] == pytest.approx(0.7) and c["speed"] == pytest.approx(0.8)
    assert r == pytest.approx((5 * 0.5 + 5 * 0.7 + 2 * 1.0 + 2 * 0.8) / 14)
    # one step braking at 6 m/s² breaks comfort on that step and, by the jerk, on the next: 8 / 10
    r, c = episode_reward(_trace(accel=[0.0] * 4 + [-6.0] + [0.0] * 5), w)
    assert c["comfort"] == pytest.approx(0.8)
    assert episode_reward(_trace(crashed=True), w)[0] == 0.0  # the collision gate
    assert episode_reward(_trace(on_road=[False] * 3 + [True] * 7), w)[0] == 0.0  # off road > 2 steps
    assert episode_reward(_trace(on_road=[False] * 2 + [True] * 8), w)[0] == pytest.approx(1.0)
    r, c = episode_reward(_trace(progress=[0.5] * 10, arrived=True), w)
    assert c["progress"] == 1.0  # reaching the destination early is full progress


def test_category_advantages_hand_worked():
    r = torch.tensor([1.0, 0.0, 3.0, 0.5, 5.0])
    cats = ["a", "b", "a", "b", "a"]
    a = category_advantages(r, cats, scale="none")
    assert torch.allclose(a, torch.tensor([-2.0, -0.25, 0.0, 0.25, 2.0]))
    a = category_advantages(r, cats)  # std_a = 2 (unbiased over 1, 3, 5), std_b = 0.3536
    assert torch.allclose(a, torch.tensor([-2.0 / 2.0001, -0.25 / (0.125 ** 0.5 + 1e-4), 0.0,
                                           0.25 / (0.125 ** 0.5 + 1e-4), 2.0 / 2.0001]), atol=1e-5)


def test_mutual_information_hand_worked():
    assert mutual_information([0, 1, 0, 1], ["a", "b", "a", "b"]) == pytest.approx(1.0)
    assert mutual_information([0, 0, 1, 1], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    assert mutual_information([0, 1, 2, 3], ["a", "a", "b", "b"]) == pytest.approx(1.0)


def _obs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(n, E.N_OTHERS, generator=g) > 0.3
    valid = torch.ones(n, E.N_ANCHORS, dtype=torch.bool)
    valid[:, :8] = False
    return {"ego": torch.randn(n, E.EGO_FEATURES, generator=g),
            "others": torch.randn(n, E.N_OTHERS, E.OTHER_FEATURES, generator=g), "present": present, "valid": valid}


def test_policy_is_invariant_to_the_order_of_other_vehicles_and_masks_anchors():
    torch.manual_seed(0)
    pol = DriverPolicy(DriverConfig(dim=32, hidden=32)).eval()
    x = _obs(6)
    perm = torch.randperm(E.N_OTHERS)
    y = {**x, "others": x["others"][:, perm], "present": x["present"][:, perm]}
    assert torch.allclose(pol(**x)["logits"], pol(**y)["logits"], atol=1e-5)
    assert torch.isinf(pol(**x)["logits"][:, :8]).all()
    x["present"][:] = False  # an empty road is still defined (the null key)
    assert torch.isfinite(pol(**x)["logits"][:, 8:]).all()


def test_policy_saves_and_loads_with_transformers(tmp_path):
    pol = DriverPolicy(DriverConfig(dim=32, hidden=32)).eval()
    pol.moes[0].bias.fill_(0.25)
    pol.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    back = DriverPolicy.from_pretrained(tmp_path).eval()
    x = _obs(4)
    assert torch.equal(back.moes[0].bias, pol.moes[0].bias)  # the V3 bias is part of the weights
    assert torch.allclose(back(**x)["logits"], pol(**x)["logits"])


@pytest.fixture(scope="module")
def rollout():
    torch.manual_seed(0)
    pol = DriverPolicy(DriverConfig(dim=32, hidden=32))
    with EpisodePool(0) as pool:
        roll = collect(pol, pool, train_starts(np.random.default_rng(0), 3), 3, duration=3.0,
                       generator=torch.Generator().manual_seed(0))
    return pol, roll


def test_rollout_shapes_and_old_logp_reproduced_with_fixed_routing(rollout):
    pol, roll = rollout
    assert roll.n_episodes == 9 and roll.decisions() == len(roll.logp) == len(roll.episode)
    assert all(e.shape == (roll.decisions(), 2) for e in roll.experts)
    assert roll.categories == ["highway"] * 3 + ["urban"] * 3 + ["roundabout"] * 3
    pol.train()
    out = pol(**roll.inputs, experts=roll.experts)
    assert torch.allclose(log_probs(out["logits"], roll.actions), roll.logp, atol=1e-5)
    stats = expert_stats(roll)["layers"][0]
    assert sum(stats["load_share"]) == pytest.approx(1.0) and 0.0 <= stats["mi_share"] <= 1.0


def test_update_runs_for_grpo_and_ppo_and_moves_the_bias(rollout):
    base, roll = rollout
    roll.rewards = torch.linspace(0, 1, roll.n_episodes)  # make every group informative
    for algo in ("grpo", "ppo"):
        pol = copy.deepcopy(base)  # the rollout's policy: the first ratio is exactly 1
        bias = [m.bias.clone() for m in pol.moes]
        opt = torch.optim.AdamW(pol.parameters(), lr=1e-3)
        st = update(pol, opt, roll, 3, UpdateSettings(algo=algo, epochs=1, minibatches=1))
        assert math.isfinite(st["loss"]) and st["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
        assert any(not torch.equal(b, m.bias) for b, m in zip(bias, pol.moes))
        if algo == "ppo":
            assert "value_loss" in st
    a = advantages(roll, 3, UpdateSettings())
    assert a.shape == (roll.n_episodes,) and torch.allclose(a.view(3, 3).sum(1), torch.zeros(3), atol=1e-4)


def test_workers_give_the_same_episodes_as_one_process():
    starts = [{"category": c, "seed": 5, "duration": 3.0} for c in E.CATEGORIES]
    torch.manual_seed(0)
    pol = DriverPolicy(DriverConfig(dim=32, hidden=32))
    rolls = []
    for workers in (0, 2):
        with EpisodePool(workers) as pool:
            rolls.append(collect(pol, pool, starts, 2, duration=3.0, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(rolls[0].actions, rolls[1].actions) and torch.equal(rolls[0].rewards, rolls[1].rewards)


def test_expert_labels_are_close_to_what_the_expert_did():
    ep = E.Episode("highway", 2, duration=6.0, expert=True)
    samples = ep.expert_samples()
    assert len(samples) >= 5
    assert np.mean([s[2] for s in samples]) < 3.0  # metres, mean over waypoints
    assert all(s[0]["valid"][s[1]] for s in samples)  # never a masked anchor


SMOKE = ["--log-episodes", "6", "--ssl-steps", "5", "--bc-epochs", "2", "--steps", "4", "--starts-per-step", "3",
         "--group-size", "2", "--eval-starts", "1", "--duration", "3", "--eval-every", "2", "--save-every", "1",
         "--workers", "0", "--frames", "false"]


def _cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "r1lab.cli", "drive", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_drive_all_stages_kill_and_resume(tmp_path):
    out = tmp_path / "run"
    proc = _cli(["--output-dir", str(out), *SMOKE, "--steps", "40"])
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "4-grpo" / "checkpoint" / "state.pt").is_file():
        time.sleep(0.2)
    assert (out / "4-grpo" / "checkpoint" / "state.pt").is_file(), proc.communicate()[1][-2000:]
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "4-grpo" / "done.json").exists()
    done = _cli(["--output-dir", str(out), *SMOKE, "--steps", "40"])
    assert done.wait(timeout=60) == 2  # refuses to overwrite without --resume
    res = _cli(["--output-dir", str(out), *SMOKE, "--steps", "6", "--resume"])
    stdout, stderr = res.communicate(timeout=300)
    assert res.returncode == 0, stderr[-2000:]
    steps = [json.loads(x)["step"] for x in (out / "4-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"idm", "bc", "grpo"} and summary["grpo"]["all"]["episodes"] == 3
    assert (out / "drive_report.md").is_file()
    assert (out / "4-grpo" / "final" / "config.json").is_file()


def test_drive_errors_are_one_line(tmp_path):
    for args, needle in ((["--categories", "parking"], "categories"), (["--algo", "sac"], "algo"),
                         (["--grouping", "scene"], "grouping")):
        p = _cli(["--output-dir", str(tmp_path / "x"), *args])
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and needle in err and len(err.strip().splitlines()) == 1, err
