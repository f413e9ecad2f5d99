"""The course's sampler: a chain of stages on one step's next-token logits, then a draw.

Every function is pure: it accepts logits of shape (V,) or (B, V), returns a new tensor and never
modifies its input; randomness comes only from an explicit `torch.Generator`. The chain runs the
stages of `DEFAULT_ORDER` (temperature -> top-k -> top-p -> min-p -> typical -> eta, Hugging
Face's order) then a softmax (`sampling_probs`), then one draw per row (`sample_next`). A stage
whose setting is off changes nothing; `order=` runs the stages in another order, for instance
one of `LIBRARY_ORDERS`. Penalties on repeated tokens need the history, so they are not a
stage here: `generate` applies them before the chain, as all three libraries do.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from lessonlib.truncation import _eta, _min_p, _typical
from lessonlib.validation import (
    check_finite_logits,
    check_generator,
    check_logits,
    check_optional_int,
    check_probability,
    check_temperature,
)

__all__ = [
    "DEFAULT_ORDER",
    "LIBRARY_ORDERS",
    "STAGES",
    "apply_temperature",
    "check_order",
    "check_sampler",
    "check_temperature",
    "filter_top_k",
    "filter_top_p",
    "sample_next",
    "sampling_probs",
    "stage_by_stage",
]

_NEG_INF = float("-inf")

STAGES = ("temperature", "top_k", "top_p", "min_p", "typical_p", "eta_cutoff")
"""Every stage of the chain, named as its setting (and as Hugging Face's GenerationConfig)."""

DEFAULT_ORDER = STAGES
"""The course's order, which is Hugging Face's (`_get_logits_processor` in
transformers/generation/utils.py)."""

LIBRARY_ORDERS = MappingProxyType(
    {
        # transformers/generation/utils.py, `_get_logits_processor`: the warpers in this order.
        "Hugging Face": STAGES,
        # vllm/v1/sample/sampler.py, `Sampler.sample`: temperature, then min-p, then top-k and
        # top-p together (vLLM has no typical or eta sampling).
        "vLLM": ("temperature", "min_p", "top_k", "top_p"),
        # llama.cpp common/common.h, the default `samplers` list (dry, top-n-sigma and xtc are off
        # by default and not in the course; it has no eta sampling): temperature comes last.
        "llama.cpp": ("top_k", "typical_p", "top_p", "min_p", "temperature"),
    }
)
"""Where each library puts the stages it has, read from its source (file named per entry)."""


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Logits divided by `temperature > 0`; accepts (V,) or (B, V), returns the same shape."""
    _checked_row_max(logits)
    try:
        temperature = check_temperature(temperature, greedy=False)
    except ValueError:
        if temperature != 0:
            raise
        # Dividing by 0 is no temperature at all: greedy is a separate branch, not a limit.
        raise ValueError(
            "temperature must be > 0 to rescale logits, got 0; greedy decoding "
            "(temperature=0) is its own case in sample_next and sampling_probs"
        ) from None
    return logits / temperature


def filter_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k highest logits per row (ties with the k-th all kept), others -inf; (V,) or (B, V).

    `k=None` or `k >= V` is off and returns a copy.
    """
    _checked_row_max(logits)
    check_optional_int("k", k, low=1)
    return _top_k(logits, k)


def _top_k(logits: Tensor, k: int | None) -> Tensor:
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    # Each row's own k-th largest value, kept as a column so that it broadcasts row by row.
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    # "<" rather than "<=": tokens tied with the k-th value survive, so more than k may remain.
    return logits.masked_fill(logits < kth, _NEG_INF)


def filter_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Keep each row's smallest top prefix with probability mass >= p, others -inf; (V,) or (B, V).

    Token j in descending order is kept iff the mass of the tokens before it is < p, so the top
    token always is. `p=None` or `p == 1` is off and returns a copy; -inf logits stay -inf.
    """
    _checked_row_max(logits)
    check_probability("p", p, allow_none=True)
    return _top_p(logits, p)


def _top_p(logits: Tensor, p: float | None) -> Tensor:
    if p is None or p == 1:
        return logits.clone()
    # Stable sort: tied logits keep vocabulary order, so the kept prefix is deterministic.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    # Weights relative to the top token in float64, so that half-precision input and long
    # prefixes do not blur the "< p" comparison; -inf tokens weigh 0.
    weights = torch.exp(sorted_logits.double() - sorted_logits[..., :1].double())
    # One running sum gives every prefix and, as its last entry, the total.
    cumulative = weights.cumsum(dim=-1)
    total = cumulative[..., -1:]
    # Keep a token iff the mass strictly before it is < p (the top token's is 0).
    mass_before = torch.cat([torch.zeros_like(total), cumulative[..., :-1]], dim=-1) / total
    # Back to vocabulary order: position order[j] receives the verdict on sorted position j.
    keep = torch.zeros_like(mass_before, dtype=torch.bool).scatter(-1, order, mass_before < p)
    return logits.masked_fill(~keep, _NEG_INF)


def _is_on(stage: str, value: object) -> bool:
    """Whether a checked setting changes anything (1 is off for temperature, top-p, typical)."""
    if stage in ("temperature", "top_p", "typical_p"):
        return value is not None and value != 1
    return value is not None


def check_order(order: object, settings: dict[str, object] | None = None) -> tuple[str, ...]:
    """`order` as a tuple of distinct names from STAGES that holds every stage switched on."""
    if isinstance(order, str) or not isinstance(order, (list, tuple)):
        raise TypeError(
            f"order must be a list or tuple of stage names from {STAGES}, got {order!r}"
        )
    unknown = [name for name in order if name not in STAGES]
    if unknown:
        raise ValueError(f"order may only name stages from {STAGES}, got {unknown[0]!r}")
    if len(set(order)) != len(order):
        raise ValueError(f"order must name each stage at most once, got {list(order)}")
    settings = settings or {}
    # Greedy (temperature 0) has no chain, so any order serves it.
    if settings.get("temperature") == 0:
        return tuple(order)
    for stage, value in settings.items():
        if stage not in order and _is_on(stage, value):
            raise ValueError(
                f"{stage}={value!r} is switched on but order {list(order)} has no {stage!r} "
                f"stage; add it to order or switch it off"
            )
    return tuple(order)


def _apply(stage: str, logits: Tensor, value: object) -> Tensor:
    """One stage on checked, row-max-shifted logits (a setting that is off returns a copy)."""
    if stage == "temperature":
        return logits / value
    rule = {"top_k": _top_k, "top_p": _top_p, "min_p": _min_p, "typical_p": _typical}
    return rule.get(stage, _eta)(logits, value)


def _chained(logits: Tensor, settings: dict[str, object], order: tuple[str, ...]) -> list[Tensor]:
    """The logits after each stage of `order`, first shifted so that each row's maximum is 0."""
    # Shifting is invisible to every stage (softmax ignores it) and keeps a tiny temperature
    # from sending the maximum to +inf: the others go to -inf instead.
    current = logits - logits.amax(dim=-1, keepdim=True)
    after = []
    for stage in order:
        current = _apply(stage, current, settings[stage])
        after.append(current)
    return after


def stage_by_stage(
    logits: Tensor,
    *,
    order: Sequence[str] = DEFAULT_ORDER,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
) -> list[tuple[str, Tensor]]:
    """(stage, probabilities after it) for each stage of `order`; temperature must be > 0.

    The last entry is what `sampling_probs` returns for the same settings and order; (V,) or
    (B, V), each tensor of the shape of `logits`.
    """
    _checked_row_max(logits)
    settings = _check_settings(temperature, top_k, top_p, min_p, typical_p, eta_cutoff)
    check_temperature(temperature, greedy=False)
    order = check_order(order, settings)
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    after = _chained(logits, settings, order)
    return [(stage, torch.softmax(a.to(work_dtype), dim=-1)) for stage, a in zip(order, after)]


def sampling_probs(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
) -> Tensor:
    """Probabilities after the chain of stages in `order`, then softmax; (V,) or (B, V).

    `temperature=0` is greedy: a one-hot at the first maximal logit, as `torch.argmax` picks,
    whatever the other settings and the order. The result has the dtype of `logits` (computed
    in float32 or wider).
    """
    _checked_row_max(logits)
    settings = _check_settings(temperature, top_k, top_p, min_p, typical_p, eta_cutoff)
    order = check_order(order, settings)
    return _probs(logits, settings, order).to(logits.dtype)


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id per row drawn from `sampling_probs`; (V,) gives shape (), (B, V) gives (B,).

    `temperature=0` returns the argmax without consuming randomness from `generator`.
    """
    check_logits("logits", logits)
    settings = _check_settings(temperature, top_k, top_p, min_p, typical_p, eta_cutoff)
    order = check_order(order, settings)
    check_generator("generator", generator)
    if temperature == 0:
        # One reduction gives both the pick and the maxima the finite check needs; max, like
        # argmax, returns the first maximal index.
        row_max, picked = logits.max(dim=-1)
        check_finite_logits("logits", logits, row_max)
        return picked
    check_finite_logits("logits", logits, logits.amax(dim=-1, keepdim=True))
    probs = _probs(logits, settings, order)
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return draws.reshape(logits.shape[:-1])


def _probs(logits: Tensor, settings: dict[str, object], order: tuple[str, ...]) -> Tensor:
    """Pipeline probabilities, in float32 or wider, on checked logits, settings and order."""
    work_dtype = torch.promote_types(logits.dtype, torch.float32)
    if settings["temperature"] == 0:
        # Greedy is its own branch: a one-hot at the first maximal index, never a division by 0.
        one_hot = torch.zeros_like(logits, dtype=work_dtype)
        return one_hot.scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    # Only the stages that are on: an off stage would only copy the logits.
    active = tuple(stage for stage in order if _is_on(stage, settings[stage]))
    final = _chained(logits, settings, active)[-1] if active else logits
    return torch.softmax(final.to(work_dtype), dim=-1)


def check_sampler(
    *,
    temperature: object = 1.0,
    top_k: object = None,
    top_p: object = None,
    min_p: object = None,
    typical_p: object = None,
    eta_cutoff: object = None,
    order: object = DEFAULT_ORDER,
) -> dict[str, object]:
    """Checked settings by keyword, `order` included, ready for `sample_next(logits, **them)`."""
    settings = _check_settings(temperature, top_k, top_p, min_p, typical_p, eta_cutoff)
    return {**settings, "order": check_order(order, settings)}


def _check_settings(
    temperature: object,
    top_k: object,
    top_p: object,
    min_p: object,
    typical_p: object,
    eta_cutoff: object,
) -> dict[str, object]:
    """The checked settings by stage name."""
    return {
        "temperature": check_temperature(temperature),
        "top_k": check_optional_int("top_k", top_k, low=1),
        "top_p": check_probability("top_p", top_p, allow_none=True),
        "min_p": check_probability("min_p", min_p, allow_none=True),
        "typical_p": check_probability("typical_p", typical_p, allow_none=True),
        "eta_cutoff": check_probability("eta_cutoff", eta_cutoff, allow_none=True),
    }


def _checked_row_max(logits: object) -> Tensor:
    """Each row's maximum (keepdim), once `logits` are known to be a usable (V,) or (B, V)."""
    check_logits("logits", logits)
    row_max = logits.amax(dim=-1, keepdim=True)
    check_finite_logits("logits", logits, row_max)
    return row_max
