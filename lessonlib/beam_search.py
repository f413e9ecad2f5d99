"""Beam search: keep the `beam_width` most probable continuations instead of drawing one.

One search serves the bigram and the GPT (both answer `lessonlib.generation`'s call). Finished
hypotheses rank by `normalised_score`: log_prob / length ** length_penalty, the end token counted
in the length. `exhaustive_search` and `most_probable_continuation` are exact searches that give
beam search a ground truth on small cases. Not here: n-gram blocking, diverse or sampled beams,
prompts of different lengths in one batch.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.generation import LanguageModel, next_token_logits, reserve_cache
from lessonlib.threads import GENERATION_THREADS, decoding_threads, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_optional_int, check_real

__all__ = [
    "BeamSearchResult",
    "BeamStep",
    "Hypothesis",
    "beam_search",
    "beam_search_many",
    "exhaustive_search",
    "most_probable_continuation",
    "normalised_score",
]


@dataclass(frozen=True)
class Hypothesis:
    """One continuation of the prompt with its raw and normalised scores."""

    text: str  # generated text, without the prompt and without the end token
    token_ids: tuple[int, ...]  # generated token ids, the end token included when finished
    log_prob: float  # natural-log probability of token_ids given the prompt (raw score)
    score: float  # log_prob / len(token_ids) ** length_penalty (the ranking score)
    finished: bool  # True when the continuation ends with the end (boundary) token

    @property
    def length(self) -> int:
        """Generated tokens, the end token included: the length used for normalisation."""
        return len(self.token_ids)


@dataclass(frozen=True)
class BeamStep:
    """The beam after one step: the hypotheses kept alive and those that ended there."""

    step: int  # tokens generated so far (1 after the first step)
    kept: tuple[Hypothesis, ...]  # live hypotheses, highest log-probability first
    ended: tuple[Hypothesis, ...]  # hypotheses moved to the finished list at this step


@dataclass(frozen=True)
class BeamSearchResult:
    """What `beam_search` returns for one prompt."""

    prompt: str
    beam_width: int
    length_penalty: float
    finished: tuple[Hypothesis, ...]  # every finished hypothesis, best normalised score first
    unfinished: tuple[Hypothesis, ...]  # the live beam when the search stopped, best first
    steps: tuple[BeamStep, ...]  # the beam after each step; () when record_steps=False
    stop_reason: str  # "unbeatable", "max_new_tokens" or "exhausted" (no live hypothesis left)

    @property
    def best(self) -> Hypothesis:
        """The best finished hypothesis; if none finished, the best unfinished one."""
        if self.finished:
            return self.finished[0]
        if not self.unfinished:
            raise ValueError("the search kept no hypothesis (every continuation has probability 0)")
        return max(self.unfinished, key=lambda h: h.score)

    @property
    def text(self) -> str:
        """Text of the best hypothesis."""
        return self.best.text


def normalised_score(log_prob: float, length: int, *, length_penalty: float) -> float:
    """log_prob / length ** length_penalty: the score that ranks finished hypotheses.

    length_penalty = 0 ranks by raw log-probability; larger values divide long hypotheses'
    (negative) totals by more, so they favour longer text.
    """
    check_real("length_penalty", length_penalty, low=0)
    check_int("length", length, low=1)
    return log_prob / length**length_penalty


def beam_search(
    model: LanguageModel,
    prompt: str,
    *,
    tokenizer: CharTokenizer,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 0.0,
    use_cache: bool = True,
    min_new_tokens: int | None = None,
    record_steps: bool = True,
) -> BeamSearchResult:
    """Continue `prompt` by beam search (see `beam_search_many` for the rules)."""
    _check_prompt(prompt, tokenizer)
    return beam_search_many(
        model,
        [prompt],
        tokenizer=tokenizer,
        beam_width=beam_width,
        max_new_tokens=max_new_tokens,
        length_penalty=length_penalty,
        use_cache=use_cache,
        min_new_tokens=min_new_tokens,
        record_steps=record_steps,
    )[0]


@torch.inference_mode()
def beam_search_many(
    model: LanguageModel,
    prompts: list[str],
    *,
    tokenizer: CharTokenizer,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 0.0,
    use_cache: bool = True,
    min_new_tokens: int | None = None,
    record_steps: bool = True,
) -> list[BeamSearchResult]:
    """Beam search for each prompt at once (prompts of equal length in tokens), one batch.

    Each step keeps the best `beam_width` extensions that do not end; those among the best
    `beam_width` that end are finished. A prompt stops once no live hypothesis can beat its
    `beam_width` best finished ones, or after max_new_tokens tokens (width 1 with length_penalty
    0 is greedy). min_new_tokens forbids the end token among the first min_new_tokens tokens.
    """
    prompts = _check_prompts(prompts, tokenizer)
    check_int("beam_width", beam_width, low=1)
    check_int("max_new_tokens", max_new_tokens, low=1)
    check_real("length_penalty", length_penalty, low=0)
    check_optional_int("min_new_tokens", min_new_tokens, low=1)
    _check_vocab(model, tokenizer)
    width, vocab, end = beam_width, model.vocab_size, tokenizer.boundary_id
    # Each prompt owns `width` consecutive rows; generated tokens begin at column `start`.
    context = _prompt_rows(prompts, tokenizer, width, device=_device(model))
    start = context.shape[1]
    # At first only each prompt's row 0 is alive (the others score -inf), so the first step
    # expands the prompt once, not `width` times.
    scores = torch.full((len(prompts), width), -math.inf, dtype=torch.float64)
    scores[:, 0] = 0.0
    kv_cache = model.new_kv_cache(len(prompts) * width) if use_cache else None
    reserve_cache(kv_cache, start + max_new_tokens, block_size=model.block_size)
    beams = [_Beam(prompt, width, length_penalty, max_new_tokens, tokenizer) for prompt in prompts]
    fresh = start  # tokens the model has not read yet
    with torch_threads(decoding_threads(len(prompts) * width)):
        for step in range(1, max_new_tokens + 1):
            logits = next_token_logits(model, context, kv_cache, new_tokens=fresh)
            log_probs = torch.log_softmax(logits.to(device="cpu", dtype=torch.float64), dim=-1)
            if min_new_tokens is not None and step <= min_new_tokens:
                log_probs[:, end] = -math.inf  # masked after the softmax: no renormalising
            extended = scores[:, :, None] + log_probs.view(len(prompts), width, vocab)
            source_rows, next_tokens, scores = _keep_best(beams, extended, context[:, start:], end)
            context = torch.cat([context[source_rows], next_tokens[:, None]], dim=1)
            _copy_cache_rows(kv_cache, source_rows)
            fresh = 1
            _end_steps(beams, step, context[:, start:], scores, record=record_steps)
            if all(beam.done for beam in beams):
                break
    return [beam.result() for beam in beams]


def _prompt_rows(
    prompts: list[str], tokenizer: CharTokenizer, width: int, *, device: torch.device
) -> Tensor:
    """(len(prompts) * width, T) start marker and prompt ids, `width` copies of each prompt."""
    encoded = [[tokenizer.boundary_id, *tokenizer.encode(p)] for p in prompts]
    if len({len(ids) for ids in encoded}) != 1:
        raise ValueError(
            "prompts must have the same length in tokens, got lengths "
            f"{sorted({len(ids) - 1 for ids in encoded})}; search them in separate calls"
        )
    return torch.tensor(encoded, device=device).repeat_interleave(width, dim=0)


def _keep_best(
    beams: list[_Beam], extended: Tensor, generated: Tensor, end: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each beam's step: (source row, next token) of every batch row, and the (P, width) scores.

    extended: (P, width, V) score of every extension; generated: the rows' generated ids.
    """
    prompts, width, vocab = extended.shape
    # A stable sort breaks ties by (parent row, token id), as argmax does for greedy.
    top_scores, top_index = extended.flatten(1).sort(dim=1, descending=True, stable=True)
    keep = min(2 * width, width * vocab)  # enough to find `width` that do not end
    top_scores, top_index = top_scores[:, :keep].tolist(), top_index[:, :keep].tolist()
    sources, tokens, row_scores = [], [], []
    for p, beam in enumerate(beams):
        rows = generated[p * width : (p + 1) * width]
        placed = beam.advance(top_scores[p], top_index[p], rows, vocab=vocab, end=end)
        sources += [p * width + source for source, _, _ in placed]
        tokens += [token for _, token, _ in placed]
        row_scores += [score for _, _, score in placed]
    return (
        torch.tensor(sources, device=generated.device),
        torch.tensor(tokens, device=generated.device),
        torch.tensor(row_scores, dtype=torch.float64).view(prompts, width),
    )


def _end_steps(
    beams: list[_Beam], step: int, generated: Tensor, scores: Tensor, *, record: bool
) -> None:
    """Let every running beam record its step and apply its stop rule."""
    width = scores.shape[1]
    for p, beam in enumerate(beams):
        if beam.done:
            continue
        beam.end_step(
            step, generated[p * width : (p + 1) * width], scores[p].tolist(), record=record
        )
        if beam.done:
            scores[p] = -math.inf  # its rows stay in the batch but never win again


class _Beam:
    """Book-keeping of one prompt's search: the finished list, the step records, the stop rule."""

    def __init__(
        self,
        prompt: str,
        width: int,
        length_penalty: float,
        max_new_tokens: int,
        tokenizer: CharTokenizer,
    ) -> None:
        self.prompt = prompt
        self.width = width
        self.length_penalty = length_penalty
        self.max_new_tokens = max_new_tokens
        self.tokenizer = tokenizer
        self.finished: list[tuple[list[int], float]] = []  # (token ids, log_prob), found order
        self.worst_first: list[float] = []  # normalised scores of the finished, ascending
        self.ended_now: list[tuple[list[int], float]] = []
        self.live_rows = torch.empty(width, 0, dtype=torch.long)  # generated ids, one per row
        self.live_scores: list[float] = [0.0] + [-math.inf] * (width - 1)
        self.rank_rows = list(range(width))  # rank_rows[i]: the row of the i-th best hypothesis
        self.steps: list[BeamStep] = []
        self.done = False
        self.stop_reason = "max_new_tokens"

    def advance(
        self,
        top_scores: list[float],
        top_index: list[int],
        rows: Tensor,
        *,
        vocab: int,
        end: int,
    ) -> list[tuple[int, int, float]]:
        """Finish the extensions that end; place `width` kept ones as (source row, token, score).

        top_scores/top_index: this prompt's best extensions, best first (index = row * V + token).
        """
        if self.done:  # its rows idle until every prompt's search has stopped
            return [(row, end, -math.inf) for row in range(self.width)]
        kept: list[tuple[int, int, float]] = []
        self.ended_now = []
        for rank, (score, index) in enumerate(zip(top_scores, top_index, strict=True)):
            if score == -math.inf or len(kept) == self.width:
                break
            parent, token = divmod(index, vocab)
            if token != end:
                kept.append((parent, token, score))
            elif rank < self.width:
                self.ended_now.append((rows[parent].tolist() + [end], score))
        for ids, log_prob in self.ended_now:
            self.finished.append((ids, log_prob))
            bisect.insort(self.worst_first, log_prob / len(ids) ** self.length_penalty)
        return self._place(kept, end)

    def _place(self, kept: list[tuple[int, int, float]], end: int) -> list[tuple[int, int, float]]:
        """Give each kept hypothesis a row, moving as few cache rows as possible."""
        # The first child of a parent stays in the parent's row (nothing to copy); further
        # children take rows whose hypothesis died, and only those rows are copied.
        slots: list[int | None] = [None] * self.width  # slots[row] = index into kept
        spare = []
        for child, (parent, _, _) in enumerate(kept):
            if slots[parent] is None:
                slots[parent] = child
            else:
                spare.append(child)
        free = (row for row in range(self.width) if slots[row] is None)
        for child in spare:
            slots[next(free)] = child
        placed, self.rank_rows = [], [0] * len(kept)
        for row, child in enumerate(slots):
            if child is None:
                # A dead row (score -inf) keeps the batch's shape; it copies nothing.
                placed.append((row, end, -math.inf))
            else:
                placed.append(kept[child])
                self.rank_rows[child] = row
        return placed

    def end_step(self, step: int, rows: Tensor, scores: list[float], *, record: bool) -> None:
        """Record the beam after this step (rows: its generated ids), then apply the stop rule."""
        self.live_rows, self.live_scores = rows, scores
        if record:
            ended = (self._hypothesis(ids, s, finished=True) for ids, s in self.ended_now)
            self.steps.append(BeamStep(step, tuple(self._live_hypotheses()), tuple(ended)))
        if not self.rank_rows:
            self.done, self.stop_reason = True, "exhausted"
        elif len(self.finished) >= self.width:
            # A live log-probability s only falls, and s / L**alpha is largest at the longest L.
            best_live = scores[self.rank_rows[0]]
            reachable = best_live / self.max_new_tokens**self.length_penalty
            if self.worst_first[-self.width] >= reachable:
                self.done, self.stop_reason = True, "unbeatable"

    def result(self) -> BeamSearchResult:
        """The frozen result; finished hypotheses best first (ties: the one found first)."""
        finished = [self._hypothesis(ids, s, finished=True) for ids, s in self.finished]
        unfinished = self._live_hypotheses()
        return BeamSearchResult(
            prompt=self.prompt,
            beam_width=self.width,
            length_penalty=self.length_penalty,
            finished=tuple(sorted(finished, key=lambda h: -h.score)),
            unfinished=tuple(unfinished),
            steps=tuple(self.steps),
            stop_reason=self.stop_reason,
        )

    def _live_hypotheses(self) -> list[Hypothesis]:
        """The live hypotheses, highest log-probability first."""
        return [
            self._hypothesis(self.live_rows[row].tolist(), self.live_scores[row], finished=False)
            for row in self.rank_rows
        ]

    def _hypothesis(self, ids: list[int], log_prob: float, *, finished: bool) -> Hypothesis:
        return _make_hypothesis(ids, log_prob, finished, self.tokenizer, self.length_penalty)


def _make_hypothesis(
    ids: list[int],
    log_prob: float,
    finished: bool,
    tokenizer: CharTokenizer,
    length_penalty: float,
) -> Hypothesis:
    # Plain indexing, not tokenizer.decode: the ids come from the model, whose vocabulary was
    # checked against the tokenizer's, and recording every step decodes many texts.
    text = "".join([tokenizer.chars[i] for i in (ids[:-1] if finished else ids)])
    score = log_prob / len(ids) ** length_penalty
    return Hypothesis(text, tuple(ids), log_prob, score, finished)


def _copy_cache_rows(kv_cache: object, source_rows: Tensor) -> None:
    """Make row i of the cache hold what row source_rows[i] held (filled positions only)."""
    if kv_cache is None:
        return
    if not all(hasattr(kv_cache, name) for name in ("layers", "length")):
        raise TypeError(
            "beam search moves KV cache rows through the cache's layers() and length; "
            f"got {type(kv_cache).__name__}"
        )
    moved = torch.nonzero(source_rows != torch.arange(len(source_rows), device=source_rows.device))
    filled = kv_cache.length
    if filled == 0 or len(moved) == 0:
        return
    targets = moved.flatten()
    sources = source_rows[targets]
    # Each layer is (2, batch, n_head, position, head_dim). Targets are never sources (a target
    # row's own hypothesis died), so the copy cannot read a row it wrote. One layer at a time:
    # the gathered rows are a temporary copy, a quarter the size of all layers' at once.
    for layer in kv_cache.layers():
        layer[:, targets, :, :filled] = layer[:, sources, :, :filled]


@torch.inference_mode()
def exhaustive_search(
    model: LanguageModel,
    prompt: str,
    *,
    tokenizer: CharTokenizer,
    max_new_tokens: int,
    length_penalty: float = 0.0,
    max_sequences: int = 100_000,
) -> list[Hypothesis]:
    """Every finished continuation of at most max_new_tokens tokens, best normalised first.

    For toy models only: it scores all (V-1)**t prefixes of every length t, and raises
    ValueError rather than hold more than max_sequences of them. Continuations of probability
    zero are left out; so are those still unfinished after max_new_tokens tokens.
    """
    _check_prompt(prompt, tokenizer)
    check_int("max_new_tokens", max_new_tokens, low=1)
    check_real("length_penalty", length_penalty, low=0)
    check_int("max_sequences", max_sequences, low=1)
    _check_vocab(model, tokenizer)
    end = tokenizer.boundary_id
    context = torch.tensor([[end, *tokenizer.encode(prompt)]], device=_device(model))
    start = context.shape[1]
    scores = torch.zeros(1, dtype=torch.float64)
    finished = []
    with torch_threads(GENERATION_THREADS):
        for _ in range(max_new_tokens):
            logits = next_token_logits(model, context)
            extended = scores[:, None] + torch.log_softmax(logits.cpu().double(), dim=-1)
            finished += _ended(context[:, start:], extended[:, end], tokenizer, length_penalty)
            extended[:, end] = -math.inf  # the others go on
            rows, tokens = _live_prefixes(extended, max_sequences)
            if len(rows) == 0:
                break
            scores = extended[rows, tokens]
            context = torch.cat(
                [context[rows.to(context.device)], tokens[:, None].to(context.device)], 1
            )
    return sorted(finished, key=lambda h: -h.score)


def _ended(
    generated: Tensor, end_log_probs: Tensor, tokenizer: CharTokenizer, length_penalty: float
) -> list[Hypothesis]:
    """The finished continuations of the prefixes `generated` that can end here."""
    end = tokenizer.boundary_id
    return [
        _make_hypothesis([*ids, end], log_prob, True, tokenizer, length_penalty)
        for ids, log_prob in zip(generated.tolist(), end_log_probs.tolist())
        if log_prob > -math.inf
    ]


def _live_prefixes(extended: Tensor, max_sequences: int) -> tuple[Tensor, Tensor]:
    """(row, token) of every extension of probability > 0; ValueError past max_sequences."""
    rows, tokens = torch.nonzero(extended > -math.inf, as_tuple=True)
    if len(rows) > max_sequences:
        raise ValueError(
            f"exhaustive search would hold {len(rows)} prefixes, more than "
            f"max_sequences={max_sequences}; lower max_new_tokens or raise max_sequences"
        )
    return rows, tokens


@torch.inference_mode()
def most_probable_continuation(
    model: LanguageModel,
    prompt: str,
    *,
    tokenizer: CharTokenizer,
    max_new_tokens: int,
    max_expansions: int = 100_000,
) -> Hypothesis | None:
    """The exact most probable finished continuation, or None; ValueError past max_expansions."""
    _check_prompt(prompt, tokenizer)
    check_int("max_new_tokens", max_new_tokens, low=1)
    check_int("max_expansions", max_expansions, low=1)
    _check_vocab(model, tokenizer)
    # Best-first (uniform-cost) search: always extend the most probable prefix found so far.
    # A prefix's log-probability only falls as it grows, so the first finished continuation
    # taken off the queue beats every other.
    end = tokenizer.boundary_id
    prefix = [end, *tokenizer.encode(prompt)]
    device = _device(model)
    order = itertools.count()  # ties go to the prefix queued first
    queue: list[tuple[float, int, tuple[int, ...]]] = [(0.0, next(order), ())]
    expansions = 0
    with torch_threads(GENERATION_THREADS):
        while queue:
            negated, _, ids = heapq.heappop(queue)
            if ids and ids[-1] == end:
                return _make_hypothesis(list(ids), -negated, True, tokenizer, 0.0)
            if len(ids) == max_new_tokens:
                continue
            if expansions == max_expansions:
                raise ValueError(
                    f"best-first search needed more than max_expansions={max_expansions} model "
                    "calls; raise max_expansions or lower max_new_tokens"
                )
            expansions += 1
            context = torch.tensor([prefix + list(ids)], device=device)
            log_probs = torch.log_softmax(next_token_logits(model, context)[0].cpu().double(), -1)
            for token, log_prob in enumerate(log_probs.tolist()):
                if log_prob > -math.inf:
                    heapq.heappush(queue, (negated - log_prob, next(order), (*ids, token)))
    return None


def _device(model: LanguageModel) -> torch.device:
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def _check_prompt(prompt: object, tokenizer: CharTokenizer) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if tokenizer.boundary in prompt:
        raise ValueError(
            f"prompt must not contain the boundary {tokenizer.boundary!r} (the search adds "
            f"the start marker itself), got {prompt!r}"
        )


def _check_prompts(prompts: object, tokenizer: CharTokenizer) -> list[str]:
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a non-empty list of str, got {prompts!r}")
    for prompt in prompts:
        _check_prompt(prompt, tokenizer)
    return prompts


def _check_vocab(model: LanguageModel, tokenizer: CharTokenizer) -> None:
    if model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model.vocab_size}; pass the tokenizer that came with the model"
        )
