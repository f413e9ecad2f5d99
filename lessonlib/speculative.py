"""Speculative decoding: a cheap draft model proposes tokens, the target checks them in one pass.

Each round the draft samples up to k tokens one at a time from its distribution Q; the target
reads all of them in a single forward pass, which gives its distribution P at every drafted
position and one more. Position by position, a drafted token x is kept with probability
min(1, P(x) / Q(x)); the first one that is not is replaced by a draw from the residual
max(0, P - Q), normalised, and the round ends. When every proposal is kept, the target's
distribution after the last one gives one more token (the bonus token). Each token produced this
way is distributed exactly as the target's own sample would be (Leviathan et al. 2023; Chen et
al. 2023), so P and Q here are the *sampling* distributions: the sampler's settings (temperature,
top-k, top-p, ...) apply to both models, as in serving engines.

Deliberately simplified: one prompt at a time, the same k in every round, no penalties on
repeated tokens (they would change P with the history inside a round). This module is not about
the sampler's stages (lessonlib.sampling) or about timing and lessons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lessonlib.generation import Generation, LanguageModel, reserve_cache
from lessonlib.sampling import DEFAULT_ORDER, check_sampler, sampling_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import Tokenizer
from lessonlib.validation import check_generator, check_int, check_logits

__all__ = [
    "SpeculativeGeneration",
    "SpeculativeRound",
    "accept_or_resample",
    "acceptance_probs",
    "expected_tokens_per_pass",
    "residual_probs",
    "speculative_generate",
    "speculative_step_distribution",
]


def expected_tokens_per_pass(acceptance_rate: float, k: int) -> float:
    """(1 - a^(k+1)) / (1 - a): tokens per target pass if each proposal is kept with rate a."""
    k = check_int("k", k, low=1)
    if not 0 <= acceptance_rate <= 1:  # "not" so that NaN fails
        raise ValueError(f"acceptance_rate must be in [0, 1], got {acceptance_rate!r}")
    if acceptance_rate == 1:
        return float(k + 1)  # every proposal kept, and the bonus token: the limit of the formula
    return (1 - acceptance_rate ** (k + 1)) / (1 - acceptance_rate)


_SUM_TOLERANCE = 1e-4  # how far from 1 a distribution's sum may be (float32 softmax: ~1e-6)


# ---------------------------------------------------------------------------------------------
# One position: the accept/reject rule and the residual, as pure functions of P and Q.
# ---------------------------------------------------------------------------------------------


def acceptance_probs(p: Tensor, q: Tensor) -> Tensor:
    """min(1, P(x) / Q(x)) for every token x, shape (V,); 1 where Q(x) = 0 (never proposed)."""
    _check_pair(p, q)
    return _acceptance(p, q)


def _acceptance(p: Tensor, q: Tensor) -> Tensor:
    # Where Q(x) = 0 the draft never proposes x, so the value is never used; 1 is the limit of
    # min(1, P/Q) as Q falls to 0 with P > 0, and avoids a 0/0.
    ratio = torch.where(q > 0, p / q.clamp_min(torch.finfo(q.dtype).tiny), torch.ones_like(p))
    return ratio.clamp(max=1.0)


def residual_probs(p: Tensor, q: Tensor) -> Tensor:
    """The distribution a rejection resamples from: max(0, P - Q) normalised, shape (V,).

    Where P <= Q everywhere (P = Q) a rejection has probability 0 and the residual is empty;
    P itself is returned then, so the result is always a distribution.
    """
    _check_pair(p, q)
    return _residual(p, q)


def _residual(p: Tensor, q: Tensor) -> Tensor:
    excess = (p - q).clamp_min(0.0)
    total = excess.sum()
    # Rounding can leave a P that equals Q up to the last bits with no excess anywhere; then a
    # rejection was (up to rounding) impossible and any distribution keeps the output exact.
    return excess / total if total > 0 else p.clone()


def speculative_step_distribution(p: Tensor, q: Tensor) -> Tensor:
    """The exact distribution of the token one accept/reject step outputs, shape (V,).

    A drafted x ~ Q is kept with probability min(1, P(x)/Q(x)); otherwise the token comes from
    the residual. Summed over x this is min(P, Q) + (1 - sum min(P, Q)) * residual, which is P.
    """
    _check_pair(p, q)
    kept = q * _acceptance(p, q)  # P(draft proposes y and it is kept) = min(P(y), Q(y))
    rejected = 1.0 - kept.sum()  # P(the proposal, whatever it was, is rejected)
    return kept + rejected * _residual(p, q)


def accept_or_resample(
    p: Tensor, q: Tensor, drafted_token: int, *, generator: torch.Generator | None = None
) -> tuple[int, bool]:
    """One position's step: (drafted_token, True) if it is kept, else (a residual draw, False).

    `p` and `q` are the target's and the draft's sampling distributions (V,) at this position;
    `drafted_token` was drawn from `q`. Consumes one uniform from `generator`, and one draw more
    after a rejection.
    """
    _check_pair(p, q)
    check_int("drafted_token", drafted_token, low=0, high=p.shape[0] - 1)
    if not q[drafted_token] > 0:
        raise ValueError(
            f"drafted_token {drafted_token} has probability 0 under q; a drafted token is "
            "drawn from q, so q must give it probability > 0"
        )
    check_generator("generator", generator)
    return _accept_or_resample(p, q, int(drafted_token), generator)


def _accept_or_resample(
    p: Tensor, q: Tensor, token: int, generator: torch.Generator | None, *, greedy: bool = False
) -> tuple[int, bool]:
    keep = float(_acceptance(p[token : token + 1], q[token : token + 1]))
    if greedy:
        # One-hot P and Q: the proposal is kept exactly when it is the target's argmax, and
        # the residual is the one-hot at that argmax. No randomness is consumed.
        return (token, True) if keep >= 1.0 else (int(p.argmax()), False)
    # Keep with probability min(1, P/Q): a uniform u in [0, 1) falls below it that often. One
    # uniform per call even when the answer is sure, so that a ratio that rounds to 1 on one path
    # and to 1 - 1e-7 on another does not shift every later draw of the generator.
    if float(torch.rand((), generator=generator)) < keep:
        return token, True
    # Rejected: the residual puts back exactly the mass that keeping took too little of.
    return _draw(_residual(p, q), generator), False


def _draw(probs: Tensor, generator: torch.Generator | None, *, greedy: bool = False) -> int:
    """One token id from probs (V,): the first maximal one when greedy, else a random draw."""
    if greedy:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


def _check_pair(p: object, q: object) -> None:
    """Both are (V,) probability vectors of one shape and dtype."""
    for name, value in (("p", p), ("q", q)):
        check_logits(name, value, dims=(1,))
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must hold finite probabilities >= 0")
        total = float(value.sum())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise ValueError(f"{name} must sum to 1 (within {_SUM_TOLERANCE:g}), got {total:.6g}")
    if p.shape != q.shape or p.dtype != q.dtype:
        raise ValueError(
            f"p and q must have the same shape and dtype, got {tuple(p.shape)} {p.dtype} and "
            f"{tuple(q.shape)} {q.dtype}"
        )


# ---------------------------------------------------------------------------------------------
# The generation loop.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeculativeRound:
    """One round: what the draft proposed, how many the target kept, and the token it added."""

    drafted: tuple[int, ...]  # the draft's proposals, in order (fewer than k near the end)
    accepted: int  # how many proposals were kept: always a prefix of `drafted`
    # The target's own token after the kept ones: resampled from the residual after a rejection,
    # else the bonus token; None when a kept proposal was the stop token (the text ended there).
    token: int | None
    bonus: bool  # True when every proposal was kept and `token` is the bonus token
    target_probs: tuple[float, ...]  # P(x) of each proposal x under the target's sampler
    draft_probs: tuple[float, ...]  # Q(x) of each proposal x under the draft's sampler
    target_passes: int  # forward passes of the target in this round (one)
    draft_passes: int  # forward passes of the draft in this round (one per proposal)

    @property
    def produced(self) -> list[int]:
        """The token ids this round added to the text: the kept proposals, then `token`."""
        kept = list(self.drafted[: self.accepted])
        return kept if self.token is None else [*kept, self.token]

    @property
    def rejected(self) -> bool:
        """True when a proposal was rejected (and `token` resampled from the residual)."""
        return self.token is not None and not self.bonus

    @property
    def examined(self) -> int:
        """Proposals the target judged: the kept ones and the rejected one (none after it)."""
        return self.accepted + self.rejected


@dataclass
class SpeculativeGeneration(Generation):
    """What `speculative_generate` returns: a `Generation` plus the record of every round."""

    rounds: list[SpeculativeRound] = field(default_factory=list)

    @property
    def target_passes(self) -> int:
        """Forward passes of the target model, in all."""
        return sum(r.target_passes for r in self.rounds)

    @property
    def draft_passes(self) -> int:
        """Forward passes of the draft model, in all."""
        return sum(r.draft_passes for r in self.rounds)

    @property
    def acceptance_rate(self) -> float:
        """Share of the judged proposals that were kept: the a of (1 - a^(k+1)) / (1 - a).

        Proposals after a rejection are never judged and do not count (NaN if none was judged).
        """
        examined = sum(r.examined for r in self.rounds)
        return sum(r.accepted for r in self.rounds) / examined if examined else float("nan")

    @property
    def tokens_per_target_pass(self) -> float:
        """Tokens produced per forward pass of the target (plain decoding: 1)."""
        produced = sum(len(r.produced) for r in self.rounds)
        return produced / self.target_passes if self.target_passes else float("nan")


@torch.inference_mode()
def speculative_generate(
    target: LanguageModel,
    draft: LanguageModel,
    prompt: str,
    *,
    tokenizer: Tokenizer,
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
    order: Sequence[str] = DEFAULT_ORDER,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    stop_at_boundary: bool = True,
    record_logits: bool = False,
) -> SpeculativeGeneration:
    """Continue `prompt` as `generate(target, ...)` would, with `draft` proposing k tokens a round.

    The result is a `Generation` plus one `SpeculativeRound` per round. The sampler's settings apply to both models. `temperature=0` is greedy: a proposal is kept
    when it is the target's argmax, so the text is `generate`'s greedy text (up to near-ties,
    which a pass over several positions may round differently). record_logits keeps the
    target's logits of each generated token. The prompt and the text must fit the target's
    context: len(prompt) + max_new_tokens <= target.block_size.
    """
    _check_call(target, draft, prompt, tokenizer, k, max_new_tokens, generator)
    sampler = check_sampler(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        typical_p=typical_p,
        eta_cutoff=eta_cutoff,
        order=order,
    )
    for name, flag in (
        ("use_cache", use_cache),
        ("stop_at_boundary", stop_at_boundary),
        ("record_logits", record_logits),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    stop = tokenizer.boundary_id if stop_at_boundary else None
    greedy = sampler["temperature"] == 0  # one-hot P and Q: decisions need no randomness
    encoded = [tokenizer.boundary_id, *tokenizer.encode(prompt)]
    # The whole sequence lives in one buffer: the committed tokens, then this round's proposals.
    ids = torch.zeros(1, len(encoded) + max_new_tokens, dtype=torch.long)
    ids[0, : len(encoded)] = torch.tensor(encoded)
    length = len(encoded)  # committed tokens: the boundary, the prompt, the text so far
    most = ids.shape[1] - 1  # the last token produced is never read by a model
    target_reader = _Reader(target, use_cache=use_cache, most=most)
    draft_reader = _Reader(draft, use_cache=use_cache, most=most)
    rounds, logits_rows, finished = [], [], False
    with torch_threads(GENERATION_THREADS):  # one sequence: one thread (lessonlib.threads)
        while length < ids.shape[1] and not finished:
            # At most as many proposals as leave room for the target's own token this round.
            budget = min(k, ids.shape[1] - length - 1)
            # 1. The draft proposes: one pass and one draw from its distribution Q per token,
            # written after the text.
            q_rows = []
            for i in range(budget):
                q = sampling_probs(draft_reader.logits(ids[:, : length + i], last=1)[0], **sampler)
                ids[0, length + i] = _draw(q, generator, greedy=greedy)
                q_rows.append(q)
                if int(ids[0, length + i]) == stop:
                    break  # nothing after a proposed end of text could be kept
            drafted = ids[0, length : length + len(q_rows)].tolist()
            # 2. The target reads all the proposals in one pass: its distribution P at each
            # drafted position, and one more after the last proposal.
            target_logits = target_reader.logits(
                ids[:, : length + len(drafted)], last=len(drafted) + 1
            )
            p_rows = sampling_probs(target_logits, **sampler)
            # 3. Keep or reject the proposals in order; a rejection resamples and ends the round,
            # and keeping them all earns the bonus token.
            accepted, token = _verify(p_rows, q_rows, drafted, stop, generator, greedy=greedy)
            # 4. Commit: the kept proposals are in place already; the target's token overwrites
            # the first rejected one (or follows the last).
            if token is not None:
                ids[0, length + accepted] = token
            produced = accepted + (token is not None)
            finished = token is None or token == stop
            # 5. Roll both caches back to the tokens that stay: the rejected proposals' keys and
            # values are forgotten.
            target_reader.keep(length + accepted)
            draft_reader.keep(length + accepted)
            rounds.append(_round(p_rows, q_rows, drafted, accepted, token))
            logits_rows.append(target_logits[:produced].float())
            length += produced
    new_ids = ids[0, len(encoded) : length].tolist()
    logits = None
    if record_logits:
        logits = torch.cat([torch.zeros(0, tokenizer.vocab_size), *logits_rows])[None]
    return SpeculativeGeneration(
        prompts=[prompt],
        texts=[tokenizer.decode(new_ids[:-1] if finished else new_ids)],
        token_ids=[new_ids],
        finished=[finished],
        logits=logits,
        rounds=rounds,
    )


def _verify(
    p_rows: Tensor,
    q_rows: list[Tensor],
    drafted: list[int],
    stop: int | None,
    generator: torch.Generator | None,
    *,
    greedy: bool,
) -> tuple[int, int | None]:
    """(proposals kept, the target's token); the token is None when a kept proposal was `stop`."""
    for i, x in enumerate(drafted):
        token, kept = _accept_or_resample(p_rows[i], q_rows[i], x, generator, greedy=greedy)
        if not kept:
            return i, token
        if x == stop:
            return i + 1, None
    # Every proposal kept: the target's distribution after the last one gives the bonus token.
    return len(drafted), _draw(p_rows[len(drafted)], generator, greedy=greedy)


def _round(
    p_rows: Tensor, q_rows: list[Tensor], drafted: list[int], accepted: int, token: int | None
) -> SpeculativeRound:
    """The record of one round."""
    return SpeculativeRound(
        drafted=tuple(drafted),
        accepted=accepted,
        token=token,
        bonus=accepted == len(drafted) and token is not None,
        target_probs=tuple(float(p_rows[i, x]) for i, x in enumerate(drafted)),
        draft_probs=tuple(float(q[x]) for q, x in zip(q_rows, drafted, strict=True)),
        target_passes=1,
        draft_passes=len(q_rows),
    )


class _Reader:
    """One model reading a growing token sequence, through its KV cache when it has one."""

    def __init__(self, model: LanguageModel, *, use_cache: bool, most: int) -> None:
        self.model = model
        self.cache = model.new_kv_cache(1) if use_cache else None
        reserve_cache(self.cache, most, block_size=model.block_size)

    def logits(self, context: Tensor, *, last: int) -> Tensor:
        """Logits (last, V) of the token after each of the last `last` positions of context (1, T)."""
        block = self.model.block_size
        if self.cache is None or context.shape[1] > block:
            # No cache, or a context past the model's window (only a draft's can be: the target
            # is checked to fit): the model reads the last block_size tokens afresh, and the
            # cache, no longer a prefix of the context, is emptied.
            if self.cache is not None:
                self.cache.reset()
            return self.model(context[:, -block:])[0, -last:]
        # Only the tokens the cache has not seen; the cache never holds the last `last` positions
        # (the caller rolls it back to the committed tokens), so their logits are all computed.
        fresh = context.shape[1] - self.cache.length
        return self.model(context[:, -fresh:], kv_cache=self.cache)[0, -last:]

    def keep(self, length: int) -> None:
        """Forget every cached position from `length` on."""
        # KVCache reads only positions below `length`, and the next pass overwrites the rest,
        # so lowering it is an exact rollback: no copy, no recomputation.
        if self.cache is not None and self.cache.length > length:
            self.cache.truncate(length)


def _check_call(
    target: object,
    draft: object,
    prompt: object,
    tokenizer: object,
    k: object,
    max_new_tokens: object,
    generator: object,
) -> None:
    """Raise on any argument speculative_generate cannot use, naming it."""
    for name, model in (("target", target), ("draft", draft)):
        if not isinstance(model, LanguageModel):
            raise TypeError(
                f"{name} must be a course language model (vocab_size, block_size, "
                f"model(token_ids, kv_cache=None), new_kv_cache), got {type(model).__name__}"
            )
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(
            "tokenizer must be a course tokenizer (CharTokenizer or lessonlib.hf.HFTokenizer), "
            f"got {type(tokenizer).__name__}"
        )
    if not (target.vocab_size == draft.vocab_size == tokenizer.vocab_size):
        raise ValueError(
            "target, draft and tokenizer must share one vocabulary, got vocab_size "
            f"{target.vocab_size}, {draft.vocab_size} and {tokenizer.vocab_size}"
        )
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt must be a str (speculative decoding here runs one prompt), got {prompt!r}"
        )
    check_int("k", k, low=1)
    check_int("max_new_tokens", max_new_tokens, low=0)
    room = target.block_size - len(prompt)
    if max_new_tokens > room:
        raise ValueError(
            f"max_new_tokens must be <= {room} for this prompt: the prompt ({len(prompt)} "
            f"tokens) and the text must fit the target's block_size={target.block_size}, got "
            f"{max_new_tokens}"
        )
    check_generator("generator", generator)
