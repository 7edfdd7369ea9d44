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


def test_router_balancer_counts_every_choice_and_moves_the_bias_after_each_step(lm):
    tok, model, texts = lm
    ids = tok(texts[:3], return_tensors="pt", padding=True).input_ids
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes no weight
    balancer = R.RouterBalancer(model, gamma=0.1).attach(opt)
    model(ids, labels=ids).loss.backward()
    assert len(balancer.loads) == 2 and all(load.sum() == ids.numel() * 2 for load in balancer.loads)  # N·K
    balancer.loads[0] = torch.tensor([3.0, 1, 2, 2, 2, 2, 2, 2])  # hand-made: mean 2
    before = [r.e_score_correction_bias.clone() for r in R.hf_routers(model)]
    opt.step()  # the post-step hook moves the biases
    after = R.hf_routers(model)[0].e_score_correction_bias
    assert torch.allclose(after - before[0], torch.tensor([-0.1, 0.1, 0, 0, 0, 0, 0, 0]))
    assert all(x.sum() == 0 for x in balancer.loads)
    model.eval()
    model(ids)
    assert all(x.sum() == 0 for x in balancer.loads)  # evaluation forwards are not counted
    balancer.detach()
    model.train()
    model(ids)
    assert all(x.sum() == 0 for x in balancer.loads)


def test_the_lm_loads_with_plain_transformers_and_samples_through_the_engine(lm, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1lab.engine.rollout import HFEngine, SamplingParams

    tok, model, texts = lm
    R.hf_routers(model)[1].e_score_correction_bias.fill_(0.05)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == "DeepseekV3ForCausalLM"
    assert torch.equal(R.hf_routers(back)[1].e_score_correction_bias, R.hf_routers(model)[1].e_score_correction_bias)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.tokenize(R.plan_text(0)) == tok.tokenize(R.plan_text(0))
    out = HFEngine(back, tok2).generate([R.scene_text(_obs())], SamplingParams(max_new_tokens=6, temperature=1.0))
    assert out is not None


def test_sft_of_the_v3_lm_moves_its_routing_bias(lm, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from r1lab.commands.sft import Config, run

    tok, model, texts = lm
    src = tmp_path / "lm"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": t.split(" Plan the next seconds.")[0] + " Plan the next seconds.",
                                        "response": t.split(" Plan the next seconds. ")[1]}) + "\n" for t in texts))
    run(Config(model=str(src), data=str(rows), output_dir=str(tmp_path / "sft"), epochs=1, tokens_per_step=512,
               eval_share=0.0, eval_every=0, report_to="none", router_bias_gamma=0.01))
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "final")
    biases = [r.e_score_correction_bias for r in R.hf_routers(final)]
    assert all(b.abs().sum() > 0 for b in biases)  # moved by the balancer, step by step
    steps = json.loads((tmp_path / "sft" / "summary.json").read_text())["steps"]
    for b in biases:  # each step adds ±γ or 0 to every expert
        assert torch.allclose(b / 0.01, (b / 0.01).round(), atol=1e-3) and b.abs().max() <= 0.01 * steps + 1e-6


@pytest.mark.slow
def test_drive_lm_runs_every_stage_at_smoke_size(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "lm"
    args = [sys.executable, "-m", "r1lab", "drive-lm", "--output-dir", str(out), "--log-episodes", "6",
            "--sft-epochs", "2", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2",
            "--max-new-tokens", "48", "--eval-starts", "1", "--duration", "3", "--workers", "0"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    for stage in ("1-data", "2-model", "3-sft", "4-grpo", "5-eval"):
        assert (out / stage / "done.json").is_file(), stage
    result = json.loads((out / "5-eval" / "done.json").read_text())
    assert set(result["metrics"]) == {"sft", "grpo"} and result["metrics"]["grpo"]["all"]["episodes"] == 3
    assert result["extra"]["grpo"]["tokens_per_decision"] > 0
    for key in ("plan_agreement", "majority_plan_agreement", "speed_restated"):  # does it read the scene?
        assert 0.0 <= result["extra"]["sft"][key] <= 1.0, key
    assert (out / "drive_lm_report.md").read_text().startswith("# r1lab drive-lm report")
    from transformers import AutoModelForCausalLM

    assert type(AutoModelForCausalLM.from_pretrained(out / "4-grpo" / "final")).__name__ == "DeepseekV3ForCausalLM"
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a run


def test_drive_lm_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    for args, needle in ((["--categories", "parking"], "categories"), (["--group-size", "1"], "group_size")):
        p = subprocess.run([sys.executable, "-m", "r1lab", "drive-lm", "--output-dir", str(tmp_path / "x"), *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
