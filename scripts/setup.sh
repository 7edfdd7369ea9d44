#!/usr/bin/env bash
# Create .venv and install r1lab with its test tools. Idempotent; safe to re-run.
# On a machine without an NVIDIA GPU, torch is pinned to the local CPU build (2.13.0) so that
# pip never pulls the multi-GB CUDA wheels; with a GPU, pip takes torch from r1lab's range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
TORCH="torch==2.13.0"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then TORCH="torch>=2.3,<3"; fi
if ! .venv/bin/python -c "import r1lab, pytest, hypothesis, wandb, trackio, reasoning_gym, highway_env, peft" >/dev/null 2>&1 || [ "${R1LAB_REINSTALL:-0}" = 1 ]; then
  .venv/bin/python -m pip install -q "$TORCH" -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import torch, transformers, r1lab; print(f'r1lab ready: torch {torch.__version__}, transformers {transformers.__version__}')"
