"""Penalties on tokens that already appeared: CTRL's repetition penalty and the additive
frequency and presence penalties of the OpenAI API and vLLM.

Each is pure: logits of shape (V,) with previous ids of shape (T,), or (B, V) with (B, T) (each
row its own history), in; new logits out; the input is never modified. Which ids count as
"previous" (the prompt too, or only the generated tokens; the whole history or a window) is the
caller's choice. The logits' values are not checked here: a NaN or +inf passes through to the
sampler, which rejects it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lessonlib.validation import check_logits, check_real

__all__ = [
    "apply_frequency_presence",
    "apply_penalties",
    "apply_repetition_penalty",
    "penalties_on",
]

_ID_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_previous_ids(previous_ids: object, logits: Tensor) -> Tensor:
    """`previous_ids` as int64 ids in 0..V-1, of shape (T,) for (V,) logits, (B, T) for (B, V)."""
    if not isinstance(previous_ids, Tensor):
        raise TypeError(
            f"previous_ids must be a torch.Tensor of token ids, got {type(previous_ids).__name__}"
        )
    if previous_ids.dtype not in _ID_DTYPES:
        raise TypeError(
            f"previous_ids must have an integer dtype (e.g. torch.long), got {previous_ids.dtype}"
        )
    shape, ids_shape = tuple(logits.shape), tuple(previous_ids.shape)
    if logits.dim() == 1 and previous_ids.dim() != 1:
        raise ValueError(
            f"previous_ids must have shape (T,) for logits of shape (V,), got {ids_shape}"
        )
    if logits.dim() == 2 and (previous_ids.dim() != 2 or ids_shape[0] != shape[0]):
        raise ValueError(
            f"previous_ids must have shape (B, T) with B = {shape[0]} (one row per row of "
            f"logits of shape {shape}), got {ids_shape}"
        )
    vocab_size = shape[-1]
    out_of_range = (previous_ids < 0) | (previous_ids >= vocab_size)
    if out_of_range.any():
        where = tuple(torch.nonzero(out_of_range)[0].tolist())
        raise ValueError(
            f"previous_ids must be token ids in 0..{vocab_size - 1}, got "
            f"{previous_ids[where].item()} at index {where}"
        )
    return previous_ids.long()


def apply_repetition_penalty(logits: Tensor, previous_ids: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty on every token in previous_ids: positive logits / penalty, negative * penalty.

    (V,) logits with (T,) ids, or (B, V) with (B, T). `penalty` > 0; 1 changes nothing, above
    1 discourages repeats, below 1 encourages them. A token is penalised once however often it
    appeared. CTRL's paper divides every logit, which raises a negative one towards 0 and so
    makes the token more likely; multiplying the negative ones is the fix that Hugging Face
    (`RepetitionPenaltyLogitsProcessor`), vLLM (`apply_repetition_penalties_torch` in
    vllm/_custom_ops.py) and llama.cpp (`llama_sampler_penalties_apply`) all use.
    """
    logits = check_logits("logits", logits)
    previous_ids = _check_previous_ids(previous_ids, logits)
    penalty = check_real("penalty", penalty, low=0, low_open=True)
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous_ids, True)
    # Dividing a negative logit would raise it towards 0: negative logits are multiplied.
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def apply_frequency_presence(
    logits: Tensor, previous_ids: Tensor, frequency: float, presence: float
) -> Tensor:
    """logits - frequency * count - presence * (count > 0), count per token in previous_ids.

    (V,) logits with (T,) ids, or (B, V) with (B, T). `frequency` and `presence` are in
    [-2, 2] as in the OpenAI API and vLLM (`SamplingParams` in vllm/sampling_params.py);
    0 turns each off, negative values encourage repeats. vLLM counts only the generated tokens
    here but the prompt too for the repetition penalty (`apply_penalties` in
    vllm/model_executor/layers/utils.py); llama.cpp counts only the last 64 tokens for all
    three by default (`penalty_last_n` in common/common.h).
    """
    logits = check_logits("logits", logits)
    previous_ids = _check_previous_ids(previous_ids, logits)
    frequency = check_real("frequency", frequency, low=-2, high=2)
    presence = check_real("presence", presence, low=-2, high=2)
    ones = torch.ones_like(previous_ids, dtype=logits.dtype)
    counts = torch.zeros_like(logits).scatter_add(-1, previous_ids, ones)
    # In the logits' dtype: a bool mask times a float would give the default dtype (float32).
    appeared = (counts > 0).to(logits.dtype)
    return logits - frequency * counts - presence * appeared


def penalties_on(repetition: float, frequency: float, presence: float) -> bool:
    """Whether any penalty changes logits, once the three values are checked."""
    check_real("repetition_penalty", repetition, low=0, low_open=True)
    check_real("frequency_penalty", frequency, low=-2, high=2)
    check_real("presence_penalty", presence, low=-2, high=2)
    return repetition != 1 or frequency != 0 or presence != 0


def apply_penalties(
    logits: Tensor,
    previous_ids: Tensor,
    *,
    repetition: float = 1.0,
    frequency: float = 0.0,
    presence: float = 0.0,
) -> Tensor:
    """The repetition penalty, then frequency and presence (vLLM's order); a copy if all are off."""
    if not penalties_on(repetition, frequency, presence):
        return check_logits("logits", logits).clone()
    # Each rule touches only the tokens in previous_ids, and the two rules act on different
    # scales (a factor and an offset), so the order changes the result only slightly; vLLM's
    # `apply_penalties` runs them in this order.
    penalized = apply_repetition_penalty(logits, previous_ids, repetition)
    return apply_frequency_presence(penalized, previous_ids, frequency, presence)
