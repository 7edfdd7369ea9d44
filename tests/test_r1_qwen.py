"""recipes/r1-qwen.toml: it parses, and the pipeline it describes runs end to end on a randomly
initialised Qwen2 (the same architecture class as Qwen2.5-0.5B-Instruct, at tiny size) with local
rows in GSM8K and MATH form standing in for the hub datasets. Also: the GSM8K/MATH cold-start
demonstrations and per-member task options of a mixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1lab.commands.r1 import Config, _task
from r1lab.config import ConfigError, build_config
from r1lab.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def test_recipe_parses_and_names_a_hub_model():
    cfg = build_config(Config, str(REPO / "recipes" / "r1-qwen.toml"), {})
    cfg.validate()
    assert cfg.model == "Qwen/Qwen2.5-0.5B-Instruct" and cfg.device == "cuda"
    assert cfg.task == "gsm8k:0.5,math:0.5" and "countdown" in cfg.final_task
    assert "gsm8k.data=openai/gsm8k:main" in cfg.task_options


def _rows(tmp_path: Path) -> tuple[Path, Path]:
    gsm, mth = tmp_path / "gsm8k", tmp_path / "math"
    gsm.mkdir()
    mth.mkdir()
    g = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
          "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
         for a, b in [(3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3), (9, 9)]]
    m = [{"problem": f"What is ${a} \\times {b}$?", "solution": f"We multiply: ${a} \\times {b} = \\boxed{{{a * b}}}$.",
          "answer": str(a * b)} for a, b in [(2, 3), (4, 5), (6, 7), (3, 3), (5, 5), (7, 2), (8, 2), (9, 1)]]
    for d, rows in ((gsm, g), (mth, m)):
        for split in ("train", "test"):
            (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return gsm, mth


def test_gsm8k_and_math_demonstrations_are_graded_correct(tmp_path):
    gsm, mth = _rows(tmp_path)
    g = get_task("gsm8k", data=str(gsm))
    ex = g.examples("train")[0]
    demo = g.demonstration(ex, None)
    assert demo == "Tom has 3 + 4 = 7 apples.\n</think>\n<answer>7</answer>" and g.grade(ex, demo).correct
    m = get_task("math", data=str(mth), answer_field="solution")
    ex = m.examples("train")[0]
    demo = m.demonstration(ex, None)
    assert demo.endswith("<answer>6</answer>") and m.grade(ex, demo).correct
    assert get_task("math", data=str(mth)).demonstration({"answer": "6"}, None) is None  # no solution, no demo


def test_member_options_reach_only_their_member(tmp_path):
    gsm, mth = _rows(tmp_path)
    cfg = Config(task="gsm8k:0.5,math:0.5", final_task="gsm8k:0.5,countdown:0.5",
                 task_options=[f"gsm8k.data={gsm}", f"math.data={mth}", "math.answer_field=solution"])
    mix = _task(cfg, cfg.task)
    assert mix.members["gsm8k"].options.data == str(gsm) and mix.members["math"].options.data == str(mth)
    final = _task(cfg, cfg.final_task)  # math.* options are dropped for a mixture without math
    assert final.members["gsm8k"].options.data == str(gsm)
    assert _task(cfg, "math").options.answer_field == "solution"  # a single task takes its own options
    with pytest.raises(ConfigError, match="no option 'nope'"):
        get_task("gsm8k:0.5,math:0.5", **{"gsm8k.nope": 1})


@pytest.mark.slow
def test_r1_qwen_recipe_runs_on_a_tiny_random_qwen2(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1lab.models import load_tokenizer, resolve_model, save_tokenizer

    tok = load_tokenizer(resolve_model(""))
    model_dir = tmp_path / "tiny-qwen2"
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    save_tokenizer(tok, model_dir)
    gsm, mth = _rows(tmp_path)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "r1lab", "r1", "--recipe", str(REPO / "recipes" / "r1-qwen.toml"),
            "--model", str(model_dir), "--device", "cpu", "--output-dir", str(out), "--report-to", "none",
            "--task-options", f"gsm8k.data={gsm}", f"math.data={mth}", "math.answer_field=solution",
            "--cold-start-rows", "16", "--sft-epochs", "60", "--sft-lr", "3e-3", "--tokens-per-step", "512", "--rl-steps", "2",
            "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "40", "--rs-prompts", "8",
            "--rs-k", "2", "--final-steps", "1", "--eval-problems", "4", "--eval-k", "1", "--save-every", "1",
            "--micro-batch-tokens", "0", "--threads", "1"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = [json.loads(x)["stage"] for x in (out / "r1_stages.jsonl").read_text().splitlines()]
    assert stages == ["1-cold-start", "2-reasoning-rl", "3-rejection-sft", "4-all-rl"]
    final = json.loads((out / "4-all-rl" / "final" / "config.json").read_text())
    assert final["model_type"] == "qwen2"
