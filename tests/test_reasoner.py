"""ReasoningDriver foundations (issue 15): scene text, strict plan parsing, templated reasoning,
the tiny DeepSeek-V3 LM (plain transformers), and the router-load bias update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("highway_env", reason="the driving extra (highway-env) is not installed")

from r1lab.driving import reasoner as R  # noqa: E402
from r1lab.driving.env import ANCHORS, EGO_FEATURES, N_ANCHORS, N_OTHERS, OTHER_FEATURES, SENSE_RANGE  # noqa: E402


def _obs(cars=()):
    ego = np.zeros(EGO_FEATURES, dtype=np.float32)
    ego[:7] = [24 / 30, 0.3 / 4, 0.0, 1.0, 1.0, 0.0, 0.8]
    others = np.zeros((N_OTHERS, OTHER_FEATURES), dtype=np.float32)
    present = np.zeros(N_OTHERS, dtype=bool)
    for i, (ahead, left, closing) in enumerate(cars):
        others[i, :3] = [ahead / SENSE_RANGE, -left / SENSE_RANGE, -closing / 30]
        present[i] = True
    return {"ego": ego, "others": others, "present": present, "valid": np.ones(N_ANCHORS, dtype=bool)}


def test_scene_text_hand_made():
    text = R.scene_text(_obs([(32, 0, 3), (-12, -4, -1)]), duration=10.0)
    assert text == ("Scene: speed 24 m/s. lane offset +0.3 m. left lane yes. right lane no. time left 8 s. "
                    "car 1: 32 m ahead, 0 m left, closing 3 m/s. car 2: 12 m behind, 4 m right, closing -1 m/s. "
                    "Plan the next seconds.")


def test_plans_round_trip_and_anything_else_is_none():
    assert all(R.parse_plan(R.plan_text(a)) == a for a in range(N_ANCHORS))
    assert R.parse_plan("speed 20 keep") == ANCHORS.index((20.0, 0))
    assert R.parse_plan(" speed 8 left ") == ANCHORS.index((8.0, -1))
    for bad in (None, "", "speed 21 keep", "speed 20", "speed 20 keep now", "keep 20", "speed -4 left", "speed 2e1 keep"):
        assert R.parse_plan(bad) is None, bad


def test_reasoning_states_the_safety_check_by_hand():
    # lead 32 m ahead closing 3 m/s: it drives 21 m/s; at the plan's 20 m/s the ego averages (24+20)/2 = 22
    text = R.reasoning(_obs([(32, 0, 3)]), ANCHORS.index((20.0, 0)))
    assert "Others: a car 32 m ahead in the target lane, closing 3 m/s." in text
    assert "Safety: gap after 3 s about 29 m, safe." in text  # 32 + (21 − 22)·3 = 29
    text = R.reasoning(_obs([(12, 0, 8)]), ANCHORS.index((25.0, 0)))  # 12 + (16 − 24.5)·3 < 10
    assert text.endswith("too close, slow down.")
    text = R.reasoning(_obs([(20, 0, 0)]), ANCHORS.index((20.0, -1)))  # the car is in my lane, not the left one
    assert "the target lane is free ahead" in text and "change to the left lane" in text
    done = R.completion(_obs(), ANCHORS.index((16.0, 1)))
    assert done.endswith("</think>\n<answer>speed 16 right</answer>")


@pytest.fixture(scope="module")
def lm():
    texts = [R.scene_text(_obs([(a, 0, c)])) + " " + R.completion(_obs([(a, 0, c)]), k)
             for a in (10, 30, 50) for c in (-2, 3) for k in range(0, N_ANCHORS, 5)]
    tok = R.build_tokenizer(texts, vocab_size=300)
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(0)
    return tok, DeepseekV3ForCausalLM(R.tiny_config(len(tok), tok.pad_token_id, tok.eos_token_id)), texts


def test_router_loads_count_every_choice_and_move_the_bias(lm):
    tok, model, texts = lm
    ids = tok(texts[:3], return_tensors="pt", padding=True).input_ids
    model.train()
    with R.RouterLoads(model) as loads:
        model(ids, labels=ids).loss.backward()
        assert len(loads.loads) == 2 and all(load.sum() == ids.numel() * 2 for load in loads.loads)  # N·K
        loads.loads[0] = torch.tensor([3.0, 1, 2, 2, 2, 2, 2, 2])  # hand-made: mean 2
        before = [r.e_score_correction_bias.clone() for r in R.routers(model)]
        used = loads.update_bias(0.1)
    after = R.routers(model)[0].e_score_correction_bias
    assert torch.allclose(after - before[0], torch.tensor([-0.1, 0.1, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(used[0], torch.tensor([3.0, 1, 2, 2, 2, 2, 2, 2])) and all(x.sum() == 0 for x in loads.loads)
    model.eval()
    with R.RouterLoads(model) as loads:
        model(ids)
    assert all(x.sum() == 0 for x in loads.loads)  # evaluation forwards are not counted


def test_the_lm_loads_with_plain_transformers_and_samples_through_the_engine(lm, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1lab.engine.rollout import HFEngine, SamplingParams

    tok, model, texts = lm
    R.routers(model)[1].e_score_correction_bias.fill_(0.05)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == "DeepseekV3ForCausalLM"
    assert torch.equal(R.routers(back)[1].e_score_correction_bias, R.routers(model)[1].e_score_correction_bias)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.tokenize(R.plan_text(0)) == tok.tokenize(R.plan_text(0))
    out = HFEngine(back, tok2).generate([R.scene_text(_obs())], SamplingParams(max_new_tokens=6, temperature=1.0))
    assert out is not None
