"""The benchmarks still run and end with their ratio line (smoke sizes; no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {
    "rollout.py": ["--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "1", "--ceiling-size", "256"],
    "update.py": ["--sequences", "8", "--group", "4", "--min-len", "4", "--max-len", "16", "--repeats", "1", "--ceiling-size", "256"],
    "step_time.py": ["--preset", "tiny", "--prompts", "2", "--group", "2", "--max-new-tokens", "8", "--repeats", "1"],
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke_run_prints_ratio_last(script):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *SMOKE[script], "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio .+: \d+\.\d\dx", last), last
