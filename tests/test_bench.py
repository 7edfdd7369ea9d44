"""The benchmarks still run and end with their ratio line (smoke sizes; no timing asserted)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {  # rollout.py and step_time.py run inside bench/gpu.sh --smoke (below)
    "update.py": ["--sequences", "8", "--group", "4", "--min-len", "4", "--max-len", "16", "--repeats", "1", "--ceiling-size", "256"],
    "driving_env.py": ["--smoke"],
    "moe.py": ["--smoke"],
}


# Against TRL: only where TRL is installed (the [bench] extra, not part of the dev install).
SMOKE_TRL = {
    "vs_trl_sft.py": ["--rows", "8", "--pool", "64", "--steps", "2", "--repeats", "1", "--trl-micro-batch", "4"],
}


def run_smoke(script: str, args: list[str]) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio .+: \d+\.\d\dx", last), last


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke_run_prints_ratio_last(script):
    run_smoke(script, SMOKE[script])


@pytest.mark.parametrize("script", sorted(SMOKE_TRL))
def test_trl_benchmark_smoke_run_prints_ratio_last(script):
    if importlib.util.find_spec("trl") is None:
        pytest.skip("trl is not installed (pip install 'trl>=0.14', the [bench] extra)")
    run_smoke(script, SMOKE_TRL[script])


def test_gpu_check_smoke_writes_one_json(tmp_path):
    # bench/gpu.sh at CPU smoke sizes: the steps a GPU run takes, recorded in one file
    import json

    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    steps = json.loads(out.read_text())["steps"]
    for name in ("step_time", "rollout"):
        assert steps[name]["status"].startswith("rc=0"), steps[name]
        assert re.fullmatch(r"ratio .+: \d+\.\d\dx", steps[name]["ratio"])
        assert steps[name]["json"][0]["bench"] == name
    assert "skipped" in steps["fsdp2"]["status"] and "vllm" in steps  # no GPUs here
