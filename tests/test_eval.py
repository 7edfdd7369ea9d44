"""`r1lab eval`: writes eval.json / eval.md and prints the metrics as one JSON object last."""

from __future__ import annotations

import json
import subprocess
import sys


def test_eval_command_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    res = subprocess.run(
        [sys.executable, "-m", "r1lab", "eval", "--model", tiny_model_dir, "--task", "countdown", "--limit", "4",
         "--k", "3", "--max-new-tokens", "12", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("pass@1", "cons@k", "pass@2", "pass@3", "format_rate", "mean_length", "n_problems", "k"):
        assert key in last, key
    assert last["n_problems"] == 4 and last["k"] == 3
    saved = json.loads((out / "eval.json").read_text())
    assert len(saved["records"]) == 4 and all(len(r["responses"]) == 3 for r in saved["records"])
    assert (out / "eval.md").read_text().startswith("# r1lab eval")
    # pass@1 is the mean correctness over all samples
    flat = [c for r in saved["records"] for c in r["correct"]]
    assert abs(last["pass@1"] - sum(flat) / len(flat)) < 1e-9


def test_eval_rejects_bad_config():
    res = subprocess.run([sys.executable, "-m", "r1lab", "eval", "--k", "0"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "k must be" in res.stderr
