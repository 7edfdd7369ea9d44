"""The ReasoningDriver's language side (issue 15): the scene as text, the plan as a strict answer,
templated reasoning for the cold start, a tokenizer for this text, a tiny DeepSeek-V3 causal LM,
and the V3 bias update that transformers does not do.

Prompt (the R1 template's question; numbers rounded, the nearest vehicles first)::

    Scene: speed 24 m/s. lane offset +0.3 m. left lane yes. right lane no. time left 8 s.
    car 1: 32 m ahead, 0 m left, closing 3 m/s. car 2: 12 m behind, 4 m right, closing -1 m/s.
    Plan the next seconds.

Answer: ``<answer>speed 20 keep</answer>``: one codebook anchor (``env.ANCHORS``) as a target
speed and ``keep`` / ``left`` / ``right``. Why the codebook rather than waypoint numbers: the
tracker needs a plan it can follow, the MoE policy of issue 14 acts in the same space (so the two
compare decision for decision), and a strict two-field form is easy to parse and to reject:
anything else scores as a failure (``parse_plan`` returns None), never a crash.

Cold-start reasoning (situation → other agents → plan → safety check) is written from the
expert's decision and the scene by rules (``reasoning``): the gap to the vehicle ahead in the
target lane after 3 s at the plan's speed is the safety check, stated with its verdict.

The model is transformers' ``DeepseekV3ForCausalLM`` at a tiny size (multi-head latent attention,
1 shared + E routed experts with sigmoid routing and the selection bias): the only HF class with
V3's router. transformers keeps ``e_score_correction_bias`` as a buffer it never updates:
``r1lab.moe.RouterBalancer`` counts each router's choices through forward hooks and moves the
buffers after each optimizer step (``r1lab sft`` and ``r1lab zero`` attach it to any model with
such routers).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from r1lab.driving.env import ANCHORS, SENSE_RANGE, SPEEDS
from r1lab.moe import RouterBalancer, hf_routers  # noqa: F401  (re-exported: the LM's bias update)

SHIFT_WORDS = {-1: "left", 0: "keep", 1: "right"}
_PLAN = re.compile(r"^\s*speed\s+(\d+)\s+(keep|left|right)\s*$")


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------
def _vehicles(obs: dict[str, np.ndarray]) -> list[dict[str, float]]:
    out = []
    for row, present in zip(obs["others"], obs["present"]):
        if present:
            out.append({"ahead": row[0] * SENSE_RANGE, "left": -row[1] * SENSE_RANGE,
                        "closing": -row[2] * 30.0, "side_speed": row[3] * 30.0})
    return out


def scene_text(obs: dict[str, np.ndarray], duration: float = 10.0) -> str:
    """The ``Episode.observe()`` features as the prompt's scene (see the module docstring)."""
    ego = obs["ego"]
    parts = [f"Scene: speed {ego[0] * 30:.0f} m/s. lane offset {ego[1] * 4:+.1f} m. "
             f"left lane {'yes' if ego[4] > 0.5 else 'no'}. right lane {'yes' if ego[5] > 0.5 else 'no'}. "
             f"time left {ego[6] * duration:.0f} s."]
    for i, v in enumerate(_vehicles(obs), 1):
        where = f"{abs(v['ahead']):.0f} m {'ahead' if v['ahead'] >= 0 else 'behind'}"
        side = f"{abs(v['left']):.0f} m {'left' if v['left'] >= 0 else 'right'}"
        parts.append(f"car {i}: {where}, {side}, closing {v['closing']:.0f} m/s.")
    return " ".join(parts) + " Plan the next seconds."


def plan_text(anchor: int) -> str:
    speed, shift = ANCHORS[anchor]
    return f"speed {speed:.0f} {SHIFT_WORDS[shift]}"


def parse_plan(answer: str | None) -> int | None:
    """The anchor an answer names (``speed 20 keep``), or None when it is not exactly one."""
    if answer is None:
        return None
    m = _PLAN.match(answer)
    if not m:
        return None
    speed, shift = float(m.group(1)), {w: s for s, w in SHIFT_WORDS.items()}[m.group(2)]
    return ANCHORS.index((speed, shift)) if (speed, shift) in ANCHORS else None


def reasoning(obs: dict[str, np.ndarray], anchor: int, horizon: float = 3.0) -> str:
    """Templated reasoning for a decision: situation, other agents, plan, safety check."""
    ego = obs["ego"]
    speed, shift = ANCHORS[anchor]
    cars = _vehicles(obs)
    lane_y = {-1: 4.0, 0: 0.0, 1: -4.0}[shift]  # left is +y in the ego frame
    ahead = [c for c in cars if c["ahead"] > 0 and abs(c["left"] - lane_y) < 2.5]
    lead = min(ahead, key=lambda c: c["ahead"]) if ahead else None
    lines = [f"Situation: I drive at {ego[0] * 30:.0f} m/s, {len(cars)} vehicles near."]
    if lead is None:
        lines.append("Others: the target lane is free ahead.")
    else:
        lines.append(f"Others: a car {lead['ahead']:.0f} m ahead in the target lane, closing {lead['closing']:.0f} m/s.")
    move = {"keep": "keep my lane", "left": "change to the left lane", "right": "change to the right lane"}
    lines.append(f"Plan: {move[SHIFT_WORDS[shift]]} at {speed:.0f} m/s.")
    if lead is None:
        lines.append("Safety: nothing ahead, safe.")
    else:
        lead_speed = ego[0] * 30 - lead["closing"]
        gap = lead["ahead"] + (lead_speed - (ego[0] * 30 + speed) / 2) * horizon
        verdict = "safe" if gap > 10 else "too close, slow down"
        lines.append(f"Safety: gap after {horizon:.0f} s about {gap:.0f} m, {verdict}.")
    return "\n".join(lines)


def completion(obs: dict[str, np.ndarray], anchor: int) -> str:
    """A cold-start completion after the R1 prompt (which opens the think block)."""
    return f"{reasoning(obs, anchor)}\n</think>\n<answer>{plan_text(anchor)}</answer>"


# ---------------------------------------------------------------------------------------------
# tokenizer and model
# ---------------------------------------------------------------------------------------------
SPECIALS = ["<pad>", "<eos>", "<think>", "</think>", "<answer>", "</answer>"]


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE over scene/reasoning text (``tokenizers``), as a transformers fast tokenizer.
    Every anchor's speed and direction word is in the training text, so plans tokenize alike."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    extra = [plan_text(a) for a in range(len(ANCHORS))] + [f"{s:.0f}" for s in SPEEDS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) + extra, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   additional_special_tokens=SPECIALS[2:])


def tiny_config(vocab_size: int, pad_id: int, eos_id: int, *, hidden: int = 64, layers: int = 2,
                n_routed: int = 8, top_k: int = 2) -> Any:
    """A DeepseekV3Config at toy size: MLA attention, every layer MoE (1 shared + n_routed experts)."""
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, moe_intermediate_size=hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=n_routed, num_experts_per_tok=top_k, n_group=1, topk_group=1, first_k_dense_replace=0,
        kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        routed_scaling_factor=1.0, max_position_embeddings=512, pad_token_id=pad_id, eos_token_id=eos_id,
        bos_token_id=None, tie_word_embeddings=True, num_mtp_layers=0)
