#!/usr/bin/env bash
# One GPU check in one go, one JSON file with every number: at most 6 minutes on one GPU (three
# steps of at most 120 s), 11 with two (the 2-rank checks add three runs of at most 90-120 s).
#
#   bash bench/gpu.sh [OUT.json]           # on a GPU machine (default OUT: bench-gpu.json)
#   bash bench/gpu.sh --smoke [OUT.json]   # the same steps at CPU smoke sizes (tests/test_bench.py runs it)
#
# Steps (each under its own time limit; a failed or skipped step is recorded, never fatal):
#   1. step_time   GRPO step of a Qwen2-0.5B-shaped model (random weights, bf16): rollout + update seconds
#   2. rollout     r1lab's HFEngine vs transformers' generate on the same 0.5B-shaped model, tokens/s
#   3. vllm        the vLLM engine (bench/vllm_cpu.py; needs `vllm` importable, the CUDA build on a GPU)
#   4. dp2         with ≥ 2 GPUs: `r1lab zero` for 3 steps on 1 and on 2 ranks (torchrun, nccl);
#                  sampled tokens, rewards and weights compared (the rank-invariance check)
#   5. fsdp2       with ≥ 2 GPUs: `r1lab sft --parallel fsdp` (FSDP2 fully_shard) of the 0.5B-shaped model
#                  on 2 ranks, ~8 steps: tokens/s and the loss from its metrics; and (fsdp2z, in step 4's
#                  block) `r1lab zero --parallel fsdp` on 2 ranks compared with the 1-rank run
# Nothing is downloaded: models are random with the shipped tokenizer (the machine may be offline).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT=${1:-bench-gpu.json}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$SMOKE" = 1 ]; then
  DEV=cpu PRESET=tiny STEP=(--prompts 2 --group 2 --max-new-tokens 8 --repeats 1 --threads 1)
  ROLL=(--prompts 2 --n 2 --max-new-tokens 8 --repeats 1 --ceiling-size 256 --threads 1)
  VLLM=(--prompts 2 --n 2 --max-new-tokens 8 --repeats 1 --threads 1)
  LIMIT=120
else
  DEV=cuda PRESET=0.5b STEP=(--prompts 16 --group 8 --max-new-tokens 256 --repeats 2)
  ROLL=(--prompts 16 --n 8 --max-new-tokens 256 --repeats 2)
  VLLM=(--prompts 16 --n 8 --max-new-tokens 256 --repeats 2)
  LIMIT=120
fi
echo "bench/gpu.sh: device $DEV, $NGPU GPU(s), preset $PRESET -> $OUT"

step() {  # step NAME LIMIT_S CMD... : run, keep its log and exit code
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$WORK/steps.txt"
  [ $rc = 0 ] || tail -5 "$WORK/$name.log"
}
skip() { echo "$1 skipped: $2" | tee -a "$WORK/steps.txt"; }

# a Qwen2-0.5B-shaped random model (tiny on --smoke) with the shipped tokenizer, saved once
"$PY" - "$WORK/model" "$PRESET" <<'EOF' || { echo "could not build the model"; exit 1; }
import sys
import torch
from step_time import PRESETS
from transformers import AutoModelForCausalLM
from r1lab.models import load_tokenizer, resolve_model, save_tokenizer, tiny_config
tok = load_tokenizer(resolve_model(""))
shape = dict(PRESETS[sys.argv[2]])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(tiny_config(shape.pop("vocab_size", len(tok)), **shape))
model.save_pretrained(sys.argv[1])
save_tokenizer(tok, sys.argv[1])
EOF

step step_time $LIMIT "$PY" bench/step_time.py --preset "$PRESET" --device "$DEV" "${STEP[@]}"
step rollout $LIMIT "$PY" bench/rollout.py --model "$WORK/model" --device "$DEV" "${ROLL[@]}"
if "$PY" -c "import vllm" > /dev/null 2>&1; then
  step vllm $LIMIT "$PY" bench/vllm_cpu.py --model "$WORK/model" --device "$DEV" "${VLLM[@]}"
else
  skip vllm "vllm is not importable by $PY (GPU: pip install vllm; CPU: bash scripts/vllm_env.sh, PYTHON=.venv-vllm/bin/python)"
fi
if [ "$NGPU" -ge 2 ]; then
  ZERO=(-m r1lab zero --steps 3 --prompts-per-step 8 --group-size 8 --max-new-tokens 64 --eval-problems 8 --eval-k 1
        --eval-every 0 --report-to none --dump-rollouts --seed 3 --device cuda)
  step dp2_one 90 "$PY" "${ZERO[@]}" --output-dir "$WORK/dp1"
  step dp2_two 90 "$PY" -m torch.distributed.run --nproc-per-node 2 "${ZERO[@]}" --output-dir "$WORK/dp2"
  step fsdp2_zero 90 "$PY" -m torch.distributed.run --nproc-per-node 2 "${ZERO[@]}" --parallel fsdp --output-dir "$WORK/fsdp2z"
else
  skip dp2 "$NGPU GPU(s); the 2-rank check needs 2 (tests/test_distributed.py runs it on CPU ranks)"
fi
if [ "$NGPU" -ge 2 ]; then
  "$PY" -c "
import json, random
r = random.Random(0)
with open('$WORK/rows.jsonl', 'w') as fh:
    for _ in range(256):
        a, b = r.randint(1, 999), r.randint(1, 999)
        fh.write(json.dumps({'prompt': f'What is {a} + {b}?', 'response': '<think>' + f'{a} plus {b} ' * 20 + f'</think> <answer>{a + b}</answer>'}) + '\n')"
  step fsdp2 120 "$PY" -m torch.distributed.run --nproc-per-node 2 -m r1lab sft --model "$WORK/model" --data "$WORK/rows.jsonl" \
    --template r1 --epochs 1 --tokens-per-step 4096 --eval-share 0.05 --report-to none --parallel fsdp --device cuda \
    --output-dir "$WORK/fsdp"
else
  skip fsdp2 "$NGPU GPU(s); the FSDP2 step needs 2 (tests/test_distributed.py runs it on CPU ranks)"
fi

"$PY" - "$WORK" "$OUT" "$DEV" "$NGPU" <<'EOF'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"device": sys.argv[3], "gpus": int(sys.argv[4]), "steps": {}}
try:
    import torch
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
except Exception:
    pass
for line in (work / "steps.txt").read_text().splitlines():
    name, rest = line.split(" ", 1)
    row = {"status": rest}
    log = work / f"{name}.log"
    if log.is_file():
        row["json"] = [json.loads(x[5:]) for x in log.read_text().splitlines() if x.startswith("json ")]
        ratio = [x for x in log.read_text().splitlines() if x.startswith("ratio ")]
        row["ratio"] = ratio[-1] if ratio else None
    result["steps"][name] = row
for two in ("dp2", "fsdp2z"):  # 2 ranks (replicated, then FSDP2-sharded) against 1
    if (work / "dp1" / "rollouts.jsonl").is_file() and (work / two / "rollouts.jsonl").is_file():
        from safetensors.torch import load_file
        a, b = ((work / d / "rollouts.jsonl").read_text() for d in ("dp1", two))
        wa, wb = (load_file(work / d / "final" / "model.safetensors") for d in ("dp1", two))
        result["steps"][two] = {"same_rollouts": a == b,
                                "max_weight_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wa)}
if (work / "fsdp" / "metrics.jsonl").is_file():
    rows = [json.loads(x) for x in (work / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    result["steps"]["fsdp2"]["metrics"] = {"steps": len(rows), "tokens_per_s": rows[-1].get("tokens_per_s"),
                                           "loss_first": rows[0].get("loss"), "loss_last": rows[-1].get("loss")}
out.write_text(json.dumps(result, indent=2))
print(f"wrote {out}")
EOF
