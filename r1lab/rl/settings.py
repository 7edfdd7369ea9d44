"""The settings of an RL run's steps (GRPO and its variants, PPO): one dataclass, its checks.

Every command that trains with RL (``zero``, the RL stages of ``r1``, on-policy distillation,
driving) takes these fields as flags and recipe keys by making its own ``Config`` a subclass of
``RLSettings`` (one level, no further inheritance): the same names, help and checks everywhere.
What a command adds (model, task, run directory, evaluation, checkpoints) stays in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r1lab.config import ConfigError
from r1lab.evaluation.reflection import REFLECTION_WORDS
from r1lab.train.lora import LoraFields
from r1lab.train.schedule import SCHEDULES


@dataclass
class RLSettings(LoraFields):
    algo: str = field(default="grpo", metadata={
        "help": "grpo | ppo (value-model baseline) | distill (on-policy distillation: reverse KL to a teacher)"})
    # rollout
    prompts_per_step: int = field(default=16, metadata={"help": "B: prompts per step"})
    group_size: int = field(default=16, metadata={"help": "G: samples per prompt"})
    max_new_tokens: int = field(default=160, metadata={"help": "completion length limit"})
    temperature: float = field(default=1.0, metadata={"help": "rollout temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling"})
    top_k: int = field(default=0, metadata={"help": "rollout top-k (0 = off)"})
    # objective
    scale: str = field(default="group", metadata={"help": "advantage scaling: group | batch | none (Dr. GRPO)"})
    norm: str = field(default="token", metadata={"help": "loss normalisation: sequence | token | constant"})
    level: str = field(default="token", metadata={"help": "importance ratio: token | sequence (GSPO)"})
    eps_low: float = field(default=0.2, metadata={"help": "clip range below 1"})
    eps_high: float = field(default=0.28, metadata={"help": "clip range above 1 (DAPO clip-higher)"})
    beta: float = field(default=0.0, metadata={"help": "k3 KL weight to the reference model"})
    ref_refresh: int = field(default=0, metadata={"help": "copy the policy into the reference every N steps"})
    dynamic_sampling: bool = field(default=False, metadata={"help": "DAPO: drop zero-spread groups, refill"})
    max_refills: int = field(default=2, metadata={"help": "extra rollouts per step for dynamic sampling"})
    overlong_buffer: int = field(default=0, metadata={"help": "DAPO overlong shaping window (tokens, 0 = off)"})
    mask_truncated: bool = field(default=False, metadata={"help": "no gradient from truncated completions"})
    # optimisation
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    router_bias_gamma: float = field(default=1e-3, metadata={
        "help": "DeepSeek-V3 models: routing-bias update speed γ after each step (0 = off)"})
    warmup: int = field(default=10, metadata={"help": "linear warm-up steps"})
    schedule: str = field(default="constant", metadata={"help": "constant | cosine (after warm-up)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm"})
    mu: int = field(default=1, metadata={"help": "inner epochs over each rollout"})
    minibatches: int = field(default=1, metadata={"help": "optimizer steps per inner epoch"})
    micro_batch: int = field(default=64, metadata={"help": "sequences per forward/backward (at most)"})
    micro_batch_tokens: int = field(default=2048, metadata={
        "help": "padded tokens per forward/backward (at most; 0 = no limit): rows are bucketed by length, "
                "long rows go in smaller micro-batches"})
    shared_prompt: bool = field(default=True, metadata={
        "help": "run each prompt once per step in the update, shared by its G completions (Llama-family "
                "models; same log-probs and gradients as the plain forward)"})
    skip_zero_advantage: bool = field(default=True, metadata={
        "help": "no forward/backward for rows whose advantage is 0 (zero-spread groups) when beta = 0 and "
                "there is no value model: their gradient is exactly 0"})
    recompute_old_logp: bool = field(default=False, metadata={"help": "recompute π_old (else reuse sampling)"})
    engine: str = field(default="hf", metadata={
        "help": "rollout engine: hf (r1lab's own) | vllm (a colocated vllm.LLM, weights pushed after every step)"})
    parallel: str = field(default="dp", metadata={
        "help": "under torchrun: dp (each rank a full replica, gradients all-reduced) | fsdp (FSDP2 fully_shard: "
                "the policy's weights, gradients and AdamW state sharded; rollouts from a full copy per rank)"})
    sampler_correction: str = field(default="tis", metadata={
        "help": "with --engine vllm: tis (π_old recomputed by the trainer, each token weighted by "
                "min(π_old/π_vllm, tis_cap)) | recompute (π_old recomputed, no weight) | none (vLLM's log-probs as π_old)"})
    tis_cap: float = field(default=2.0, metadata={"help": "truncated importance sampling cap C"})
    value_lr: float = field(default=3e-4, metadata={"help": "PPO value-model learning rate"})
    gae_lambda: float = field(default=0.95, metadata={"help": "PPO GAE λ"})
    gamma: float = field(default=1.0, metadata={"help": "PPO discount"})
    distill_discount: float = field(default=0.0, metadata={
        "help": "on-policy distillation: γ of the future reverse KL each token is charged (0 = its own token only; "
                "1 = the rest of the sequence, the sequence-level gradient)"})
    distill_reward: float = field(default=0.0, metadata={
        "help": "on-policy distillation: weight of the task reward's group advantage added to every token (0 = pure KL)"})
    max_bad_steps: int = field(default=5, metadata={"help": "stop after this many NaN/inf losses in a row"})
    reflection_words: list[str] = field(default_factory=lambda: list(REFLECTION_WORDS),
                                        metadata={"help": "words counted as reflection"})
    seed: int = field(default=0, metadata={"help": "seed of data order, sampling and init"})

    def recomputes_old(self) -> bool:
        """π_old from a trainer forward pass: asked for, or vLLM's log-probs are corrected."""
        return self.recompute_old_logp or (self.engine == "vllm" and self.sampler_correction != "none")

    def uses_tis(self) -> bool:
        return self.engine == "vllm" and self.sampler_correction == "tis"

    def validate(self) -> None:
        """Reject impossible combinations before any work, each with what to change."""
        self.validate_lora()
        if self.algo not in ("grpo", "ppo", "distill"):
            raise ConfigError(f"algo must be grpo | ppo | distill, not {self.algo!r}")
        if self.prompts_per_step < 1 or self.group_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("prompts_per_step, group_size and max_new_tokens must be >= 1")
        if self.group_size < 2 and self.algo == "grpo":
            raise ConfigError("group_size must be >= 2 for GRPO (a group of one has no baseline); use --algo ppo")
        if self.minibatches < 1:
            raise ConfigError("minibatches must be >= 1")
        n = self.prompts_per_step * self.group_size
        if n % self.minibatches:
            raise ConfigError(
                f"prompts_per_step x group_size = {n} sequences do not split into {self.minibatches} minibatches; "
                f"choose minibatches dividing {n}"
            )
        if (n // self.minibatches) % self.group_size and self.algo == "grpo" and self.minibatches > 1:
            raise ConfigError(
                f"a minibatch of {n // self.minibatches} sequences splits a group of {self.group_size}; "
                f"choose minibatches dividing {self.prompts_per_step}"
            )
        if self.scale not in ("group", "batch", "none"):
            raise ConfigError(f"scale must be group | batch | none, not {self.scale!r}")
        if self.norm not in ("sequence", "token", "constant"):
            raise ConfigError(f"norm must be sequence | token | constant, not {self.norm!r}")
        if self.level not in ("token", "sequence"):
            raise ConfigError(f"level must be token | sequence, not {self.level!r}")
        if self.micro_batch_tokens < 0:
            raise ConfigError("micro_batch_tokens must be >= 0 (0 = no token limit)")
        if self.mu < 1 or self.micro_batch < 1:
            raise ConfigError("mu and micro_batch must be >= 1")
        if self.overlong_buffer >= self.max_new_tokens:
            raise ConfigError("overlong_buffer must be smaller than max_new_tokens")
        if self.ref_refresh and self.beta == 0:
            raise ConfigError("ref_refresh has no effect with beta = 0; set --beta (R1 used 0.001)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be {' | '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.temperature <= 0:
            raise ConfigError("rollout temperature must be > 0 (log-probs are of the sampling policy)")
        if self.engine not in ("hf", "vllm"):
            raise ConfigError(f"engine must be hf | vllm, not {self.engine!r}")
        if self.parallel not in ("dp", "fsdp"):
            raise ConfigError(f"parallel must be dp | fsdp, not {self.parallel!r}")
        if self.parallel == "fsdp" and self.lora_rank > 0:
            raise ConfigError("parallel fsdp with LoRA is not supported: use --parallel dp (adapters are small)")
        if self.sampler_correction not in ("tis", "recompute", "none") or self.tis_cap <= 0:
            raise ConfigError("sampler_correction must be tis | recompute | none, and tis_cap > 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ConfigError("lr and grad_clip must be > 0")
        if not 0 <= self.distill_discount <= 1 or self.distill_reward < 0:
            raise ConfigError("distill_discount must be in [0, 1] and distill_reward >= 0")
        if self.distill_reward and self.group_size < 2:
            raise ConfigError("distill_reward needs group_size >= 2 (the reward's advantage is group-relative)")
        if self.warmup < 0 or self.beta < 0 or self.max_bad_steps < 1:
            raise ConfigError("warmup and beta must be >= 0, max_bad_steps >= 1")
