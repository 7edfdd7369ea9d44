"""`r1lab sft` and its components: response-only loss by hand, bucketing, rows, resume, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from r1lab.data import DataError
from r1lab.train.sft import SFTExample, batches, collate, micro_batches, read_sft_rows, response_nll, sft_step

REPO = Path(__file__).resolve().parents[1]


class Uniform(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over V: every token costs log V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.w
        return type("Out", (), {"logits": logits})()


def test_collate_masks_response_tokens_only():
    ids, mask = collate([SFTExample([5, 6], [7, 0]), SFTExample([5], [8, 9, 0])], pad_id=1)
    assert ids.tolist() == [[5, 6, 7, 0], [5, 8, 9, 0]]
    # mask[t] = 1 where ids[t+1] is a response token: row 0 predicts 7, 0; row 1 predicts 8, 9, 0
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_response_nll_by_hand():
    ids, mask = collate([SFTExample([2, 3, 4], [5, 0]), SFTExample([2], [6, 0])], pad_id=1)
    nll, n = response_nll(Uniform(10), ids, mask)
    assert n == 4 and nll.item() == pytest.approx(4 * math.log(10))  # 4 response tokens, log 10 each


def test_step_loss_is_the_token_mean_whatever_the_micro_batches():
    torch.manual_seed(0)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    rows = [SFTExample([1, 2, 3], [4, 5, 0]), SFTExample([1], [6, 0]), SFTExample([2, 2, 2, 2], [7, 8, 9, 0])]
    grads = []
    for mbt in (1000, 4):  # one micro-batch, or one row each
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        st = sft_step(model, opt, rows, pad_id=0, lr=0.0, micro_batch_tokens=mbt, grad_clip=1e9)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert st["tokens"] == 9 and st["skipped"] == 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_batches_cover_each_row_once_per_epoch_and_bucket_by_length():
    ex = [SFTExample([1] * (i % 7 + 1), [2] * (i % 5 + 1)) for i in range(200)]
    steps = batches(ex, tokens_per_step=64, seed=0, epoch=0)
    assert sorted(i for s in steps for i in s) == list(range(200))
    assert all(sum(ex[i].length for i in s) <= 64 or len(s) == 1 for s in steps)
    assert steps != batches(ex, tokens_per_step=64, seed=0, epoch=1)  # reshuffled each epoch
    assert steps == batches(ex, tokens_per_step=64, seed=0, epoch=0)
    spread = [max(ex[i].length for i in s) - min(ex[i].length for i in s) for s in steps]
    assert sum(spread) / len(spread) < 3  # bucketed: little padding inside a step
    mbs = micro_batches([ex[i] for i in steps[0]], max_tokens=20)
    assert all(len(m) * max(e.length for e in m) <= 20 or len(m) == 1 for m in mbs)


def test_rows_are_checked_with_file_line_and_field(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps({"prompt": "1+1=", "response": "2"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n")
    assert len(read_sft_rows(str(good))[0]) == 2
    for row, msg in (({"prompt": "x"}, "ok.jsonl:1: field 'response'"),
                     ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
                     ({"prompt": "x", "response": 3}, "field 'response'")):
        good.write_text(json.dumps(row) + "\n")
        with pytest.raises(DataError, match=msg):
            read_sft_rows(str(good))


def _rows(path: Path, n: int = 60) -> str:
    from r1lab.tasks import get_task

    task = get_task("arithmetic", train_size=n, test_size=5)
    with open(path, "w") as fh:
        for ex in task.examples("train"):
            fh.write(json.dumps({"prompt": task.prompt(ex), "response": ex["solution"] if "solution" in ex
                                 else f"</think><answer>{ex['answer']}</answer>"}) + "\n")
    return str(path)


def test_sft_learns_and_writes_a_run(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from r1lab.commands.sft import Config, run

    data = _rows(tmp_path / "rows.jsonl")
    out = run(Config(model=tiny_model_dir, data=data, output_dir=str(tmp_path / "run"), epochs=3, lr=3e-3,
                     warmup=2, tokens_per_step=512, eval_share=0.2, eval_every=0, report_to="none"))
    assert out["final_eval_loss"] < out["start_eval_loss"]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(out["steps"])) and {m["epoch"] for m in metrics} == {0, 1, 2}
    lrs = [m["lr"] for m in metrics]
    assert lrs[1] == pytest.approx(3e-3) and 3e-4 < lrs[-1] < 0.2 * 3e-3  # cosine towards 1/10
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")


def test_sft_kill_9_then_resume(tiny_model_dir, tmp_path):
    data = _rows(tmp_path / "rows.jsonl", 200)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "r1lab", "sft", "--model", tiny_model_dir, "--data", data, "--output-dir", str(out),
            "--epochs", "4", "--tokens-per-step", "256", "--save-every", "1", "--eval-every", "0",
            "--report-to", "none"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").is_file()
                                          and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    res = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(len(steps))) and len(steps) > done  # no step twice, none lost, it went on
    assert (out / "final" / "model.safetensors").is_file()
    with pytest.raises(subprocess.CalledProcessError):  # a finished run refuses to start over silently
        subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
