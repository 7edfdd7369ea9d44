"""Rollout engines: the ``Engine`` interface and the batched sampler (``rollout``), the lean decode
step for Llama-family models (``fastdecode``) and the KV cache for any other HF model (``kvcache``); and the same
interface on a colocated vLLM (``vllm_engine``, optional: needs vllm, see scripts/vllm_env.sh)."""
