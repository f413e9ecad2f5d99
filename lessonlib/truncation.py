"""Truncation rules past top-k and top-p: min-p, locally typical sampling and eta sampling.

Each filter is pure: logits of shape (V,) or (B, V) in, new logits of the same shape out, with
-inf for the tokens it removes; the input is never modified and `None` turns a rule off. Each
keeps exactly the tokens that Hugging Face transformers' warper of the same name keeps with its
defaults (min_tokens_to_keep=1); tests/test_truncation.py checks it. Where a rule sits in the
chain (before or after temperature, top-k, top-p) is the caller's choice, not this module's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lessonlib.validation import check_finite_logits, check_logits, check_probability

__all__ = ["filter_eta", "filter_min_p", "filter_typical"]

_NEG_INF = float("-inf")


def _check_values(logits: object) -> Tensor:
    """`logits` of shape (V,) or (B, V) without NaN or +inf and with a finite value in each row."""
    logits = check_logits("logits", logits)
    check_finite_logits("logits", logits, logits.amax(dim=-1))
    return logits


def filter_min_p(logits: Tensor, min_p: float | None) -> Tensor:
    """Keep tokens with probability >= min_p times the top token's, others -inf; (V,) or (B, V).

    `min_p` is in (0, 1]; None is off and returns a copy. The probabilities are those of the
    logits as given, so a temperature applied before min-p changes what it keeps. Hugging Face
    and vLLM apply min-p after temperature (`_get_logits_processor` in
    transformers/generation/utils.py; the `Sampler` in vllm/v1/sample/sampler.py); llama.cpp's
    default chain applies it before temperature (`samplers` in common/common.h), comparing each
    logit with max_logit + log(min_p) instead of probabilities.
    """
    logits = _check_values(logits)
    return _min_p(logits, check_probability("min_p", min_p, allow_none=True))


def _min_p(logits: Tensor, min_p: float | None) -> Tensor:
    if min_p is None:
        return logits.clone()
    probs = torch.softmax(logits, dim=-1)
    # min_p <= 1, so the top token (and every token tied with it) always passes.
    too_rare = probs < min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(too_rare, _NEG_INF)


def filter_typical(logits: Tensor, mass: float | None) -> Tensor:
    """Keep the tokens whose surprisal is nearest the entropy, up to mass `mass`; (V,) or (B, V).

    Tokens are ranked by |-log p - entropy|; the kept set is the shortest prefix of that ranking
    whose mass reaches `mass`, plus every token tied with its last one (as Hugging Face's
    `TypicalLogitsWarper`; llama.cpp's `llama_sampler_typical_apply` stops at the first token
    whose running mass exceeds `mass` and keeps no ties). The top token can be removed: it is
    the least surprising token, not necessarily a typical one. `mass` is in (0, 1]; None or 1
    is off and returns a copy.
    """
    logits = _check_values(logits)
    return _typical(logits, check_probability("mass", mass, allow_none=True))


def _typical(logits: Tensor, mass: float | None) -> Tensor:
    if mass is None or mass == 1:
        return logits.clone()
    log_probs = torch.log_softmax(logits, dim=-1)
    # nansum: a -inf logit contributes 0 * -inf = NaN, which must count as 0.
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)
    # How far each token's surprisal is from the entropy; -inf logits are infinitely far.
    distance = (-log_probs - entropy).abs()
    sorted_distance, order = torch.sort(distance, dim=-1)
    # Mass of the most typical tokens up to each position.
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    # The first position whose mass reaches `mass` (the last one if rounding never gets there).
    cut = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    return logits.masked_fill(distance > sorted_distance.gather(-1, cut), _NEG_INF)


def filter_eta(logits: Tensor, epsilon: float | None) -> Tensor:
    """Keep tokens with probability >= min(epsilon, sqrt(epsilon) * exp(-entropy)); (V,) or (B, V).

    This is eta sampling as Hewitt et al. (2022) define it and as Hugging Face's
    `EtaLogitsWarper` computes it (its docstring writes sqrt(epsilon * exp(-entropy)), which is
    not what its code does). The top token, and any tied with it, always stays. `epsilon` is
    in (0, 1]; None is off and returns a copy. vLLM and llama.cpp have no eta sampler (no such
    field in vllm/sampling_params.py, no such sampler type in llama.cpp's common/common.h).
    """
    logits = _check_values(logits)
    return _eta(logits, check_probability("epsilon", epsilon, allow_none=True))


def _eta(logits: Tensor, epsilon: float | None) -> Tensor:
    if epsilon is None:
        return logits.clone()
    probs = torch.softmax(logits, dim=-1)
    # The entropy as torch.distributions computes it, as Hugging Face does, so that the
    # thresholds agree to the last bit.
    entropy = torch.distributions.Categorical(logits=logits).entropy().unsqueeze(-1)
    # epsilon in the logits' dtype: the threshold is computed at the logits' precision.
    eps = torch.tensor(epsilon, dtype=logits.dtype, device=logits.device)
    eta = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy))
    # eta never exceeds the top probability in exact arithmetic; the maximum is kept explicitly
    # so that rounding cannot remove it.
    too_rare = (probs < eta) & (logits < logits.amax(dim=-1, keepdim=True))
    return logits.masked_fill(too_rare, _NEG_INF)
