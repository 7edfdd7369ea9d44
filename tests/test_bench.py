"""The benchmarks still run and end with their ratio line (smoke sizes; no timing asserted)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {
    "rollout.py": ["--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "1", "--ceiling-size", "256"],
    "update.py": ["--sequences", "8", "--group", "4", "--min-len", "4", "--max-len", "16", "--repeats", "1", "--ceiling-size", "256"],
    "driving_env.py": ["--smoke"],
    "moe.py": ["--smoke"],
    "step_time.py": ["--preset", "tiny", "--prompts", "2", "--group", "2", "--max-new-tokens", "8", "--repeats", "1"],
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
