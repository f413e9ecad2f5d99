"""Measures of degenerate text after Holtzman et al. 2020 ("The Curious Case of Neural Text
Degeneration", Table 1), and one table row per decoding method.

The paper's four (perplexity, Self-BLEU-4, a Zipf coefficient, the share of generations ending in
a loop), distinct-n, and what only a synthetic corpus gives: whether each generation is a valid
TinyTales story and how probable its characters are under the true grammar. Nothing here
generates text (see `lessonlib.generation` and `lessonlib.beam_search`) or plots.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.distributions import entropy
from lessonlib.analysis.recorded import drawn_step_logits
from lessonlib.analysis.statistics import jackknife_se, ratio_with_error
from lessonlib.generation import Generation, LanguageModel
from lessonlib.metrics import distinct_n
from lessonlib.sampling import sampling_probs
from lessonlib.scoring import truth_char_log_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_real

__all__ = [
    "DegenerationRow",
    "TruthScore",
    "bleu",
    "continuation_log_probs",
    "ends_in_loop",
    "format_table",
    "loop_share",
    "measure_decoding",
    "nats_per_token",
    "perplexity",
    "sampling_entropy",
    "self_bleu",
    "self_bleu_scores",
    "tokens_per_text",
    "truth_entropy",
    "truth_score",
    "word_frequencies",
    "word_tokens",
    "zipf_coefficient",
    "zipf_standard_error",
]

_TOKEN = re.compile(r"[A-Za-z]+|[^\sA-Za-z]")
_WORD = re.compile(r"[A-Za-z]+")


def _check_texts(texts: object, *, name: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a str, got {type(text).__name__}")
    return list(texts)


def word_tokens(text: str) -> list[str]:
    """BLEU's tokens: runs of letters and single punctuation marks ("Mia, hi." -> Mia , hi .)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(text)


def word_frequencies(texts: Sequence[str]) -> Counter[str]:
    """How often each lower-cased word (run of letters) occurs, pooled over `texts`."""
    counts: Counter[str] = Counter()
    for text in _check_texts(texts):
        counts.update(word.lower() for word in _WORD.findall(text))
    return counts


def ends_in_loop(text: str, *, window: int = 50) -> bool:
    """True if the last `window` characters of `text` already occur earlier in it (overlap allowed).

    50 characters are about two short sentences. Looser than a strictly periodic tail
    (`metrics.find_cycle`), the rule also catches a decoder that alternates between two stock
    sentences in no fixed order, as greedy decoding of the course model does.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    check_int("window", window, low=1)
    if len(text) <= window:
        return False
    # The first occurrence of the tail starts before the tail itself iff it occurred earlier.
    return text.find(text[-window:]) < len(text) - window


def loop_share(texts: Sequence[str], *, window: int = 50) -> float:
    """Share of `texts` that end in a loop (see `ends_in_loop`); 0.0 for no texts."""
    texts = _check_texts(texts)
    return sum(ends_in_loop(t, window=window) for t in texts) / len(texts) if texts else 0.0


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_from_counts(
    hypothesis_length: int,
    clipped: Sequence[int],
    totals: Sequence[int],
    reference_lengths: Sequence[int],
) -> float:
    """BLEU from per-order clipped matches and totals: the geometric mean of the precisions,
    times the brevity penalty exp(1 - r / c) when the hypothesis length c is at most r, the
    closest reference length. No smoothing: any precision of 0 gives 0."""
    if hypothesis_length == 0 or any(t == 0 or c == 0 for c, t in zip(clipped, totals)):
        return 0.0
    log_precision = sum(math.log(c / t) for c, t in zip(clipped, totals)) / len(totals)
    # The closest reference length; on a tie the shorter one (as NLTK's sentence_bleu does).
    closest = min(reference_lengths, key=lambda r: (abs(r - hypothesis_length), r))
    brevity = 0.0 if hypothesis_length > closest else 1.0 - closest / hypothesis_length
    return math.exp(brevity + log_precision)


def bleu(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], *, max_n: int = 4
) -> float:
    """Sentence BLEU-max_n of a token list against reference token lists (0 = nothing shared)."""
    check_int("max_n", max_n, low=1)
    if isinstance(hypothesis, str) or any(isinstance(r, str) for r in references):
        raise TypeError("hypothesis and each reference must be token lists (see word_tokens)")
    if not references:
        raise ValueError("references must hold at least one token list, got none")
    clipped, totals = [], []
    for n in range(1, max_n + 1):
        counts = _ngrams(hypothesis, n)
        most: Counter[tuple[str, ...]] = Counter()
        for reference in references:
            most |= _ngrams(reference, n)  # | keeps the larger count of each n-gram
        clipped.append(sum(min(c, most[g]) for g, c in counts.items()))
        totals.append(sum(counts.values()))
    return _bleu_from_counts(len(hypothesis), clipped, totals, [len(r) for r in references])


def self_bleu_scores(texts: Sequence[str], *, max_n: int = 4) -> list[float]:
    """BLEU-max_n of each text (word_tokens) against all the others, in the order of `texts`."""
    texts = _check_texts(texts)
    check_int("max_n", max_n, low=1)
    if len(texts) < 2:
        raise ValueError(
            f"texts must hold at least 2 texts (one needs references), got {len(texts)}"
        )
    tokens = [word_tokens(t) for t in texts]
    counts = [[_ngrams(words, n) for n in range(1, max_n + 1)] for words in tokens]
    # For each n-gram keep the two largest counts over texts and who holds the largest, so that
    # "the most any *other* text has" costs one lookup instead of a pass over every reference.
    best: list[dict[tuple[str, ...], tuple[int, int, int]]] = [{} for _ in range(max_n)]
    for index, per_order in enumerate(counts):
        for order, grams in enumerate(per_order):
            for gram, count in grams.items():
                top, holder, second = best[order].get(gram, (0, -1, 0))
                if count > top:
                    best[order][gram] = (count, index, top)
                elif count > second:
                    best[order][gram] = (top, holder, count)
    lengths = [len(words) for words in tokens]
    scores = []
    for index, per_order in enumerate(counts):
        clipped, totals = [], []
        for order, grams in enumerate(per_order):
            matched = 0
            for gram, count in grams.items():
                top, holder, second = best[order][gram]
                matched += min(count, second if holder == index else top)
            clipped.append(matched)
            totals.append(sum(grams.values()))
        others = lengths[:index] + lengths[index + 1 :]
        scores.append(_bleu_from_counts(lengths[index], clipped, totals, others))
    return scores


def self_bleu(texts: Sequence[str], *, max_n: int = 4) -> float:
    """Mean over `texts` of BLEU-max_n of each text (word_tokens) against all the others."""
    scores = self_bleu_scores(texts, max_n=max_n)
    return sum(scores) / len(scores)


def zipf_coefficient(frequencies: Mapping[str, float] | Sequence[float]) -> float:
    """s of frequency ~ rank**(-s): minus the least-squares slope of log frequency on log rank."""
    values = list(frequencies.values()) if isinstance(frequencies, Mapping) else list(frequencies)
    if len(values) < 2:
        raise ValueError(
            f"frequencies must hold at least 2 values to fit a slope, got {len(values)}"
        )
    for index, value in enumerate(values):
        check_real(f"frequencies[{index}]", value, low=0, low_open=True)
    ranked = sorted(values, reverse=True)
    x = [math.log(rank) for rank in range(1, len(ranked) + 1)]
    y = [math.log(value) for value in ranked]
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y))
    variance = sum((a - mean_x) ** 2 for a in x)
    return -covariance / variance


def zipf_standard_error(texts: Sequence[str]) -> float:
    """Jackknife standard error of the Zipf coefficient of `texts`, one text left out at a time.

    The generations, not the words, are the independent units.
    """
    texts = _check_texts(texts)
    if len(texts) < 2:
        raise ValueError(f"texts must hold at least 2 texts to leave one out, got {len(texts)}")
    per_text = [word_frequencies([text]) for text in texts]
    total = sum(per_text, Counter())
    return jackknife_se([zipf_coefficient(total - counts) for counts in per_text])  # `-` drops 0s


def perplexity(log_probs: Sequence[float], token_counts: Sequence[int]) -> float:
    """exp(-sum(log_probs) / sum(token_counts)): per-token perplexity pooled over sequences."""
    _check_counts(log_probs, token_counts)
    return math.exp(-math.fsum(log_probs) / sum(token_counts))


def tokens_per_text(texts: Sequence[str], finished: Sequence[bool]) -> list[int]:
    """Tokens of each continuation: its characters, plus the end marker where it finished."""
    return [len(text) + bool(done) for text, done in zip(texts, finished, strict=True)]


def nats_per_token(log_probs: Sequence[float], token_counts: Sequence[int]) -> tuple[float, float]:
    """-sum(log_probs) / sum(token_counts) (the log of the perplexity) and its standard error.

    The sequences, not their tokens, are the independent units (`ratio_with_error`); NaN error
    for a single sequence.
    """
    _check_counts(log_probs, token_counts)
    estimate = ratio_with_error([-value for value in log_probs], token_counts)
    return estimate.value, estimate.standard_error


def _check_counts(log_probs: Sequence[float], token_counts: Sequence[int]) -> None:
    if len(log_probs) != len(token_counts):
        raise ValueError(
            f"log_probs and token_counts must have equal lengths, got {len(log_probs)} and "
            f"{len(token_counts)}"
        )
    if any(c < 0 for c in token_counts) or sum(token_counts) == 0:
        raise ValueError(f"token_counts must be >= 0 with a positive sum, got {list(token_counts)}")


@torch.inference_mode()
def continuation_log_probs(
    model: LanguageModel,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    tokenizer: CharTokenizer,
    finished: Sequence[bool],
    batch_size: int = 32,
) -> list[Tensor]:
    """float64 log P(token | start marker + prompt + text before it) of each text's tokens.

    The tokens of `texts[i]` are its characters, then the end marker where `finished[i]`. Texts
    are scored in batches of `batch_size`, right-padded (causal attention never looks at the
    padding on the right), one forward pass per batch.
    """
    prompts, texts = _check_texts(prompts, name="prompts"), _check_texts(texts)
    check_int("batch_size", batch_size, low=1)
    if not len(prompts) == len(texts) == len(finished):
        raise ValueError(
            f"prompts, texts and finished must have equal lengths, got {len(prompts)}, "
            f"{len(texts)} and {len(finished)}"
        )
    end = tokenizer.boundary_id
    rows = []
    for index, (prompt, text, done) in enumerate(zip(prompts, texts, finished)):
        ids = [end, *tokenizer.encode(prompt), *tokenizer.encode(text)] + [end] * bool(done)
        if len(ids) - 1 > model.block_size:
            raise ValueError(
                f"prompts[{index}] + texts[{index}] must fit in the model's context: "
                f"{len(ids) - 1} tokens, more than block_size={model.block_size}"
            )
        rows.append((ids, len(prompt)))
    scores: list[Tensor] = []
    with torch_threads(GENERATION_THREADS):
        for first in range(0, len(rows), batch_size):
            scores += _score_batch(model, rows[first : first + batch_size], end)
    return scores


def _score_batch(
    model: LanguageModel, chunk: list[tuple[list[int], int]], end: int
) -> list[Tensor]:
    """log P of each row's continuation tokens: one forward pass over the right-padded rows."""
    width = max(len(ids) for ids, _ in chunk) - 1
    if width == 0:
        return [torch.zeros(0, dtype=torch.float64) for _ in chunk]
    tokens = torch.full((len(chunk), width + 1), end, dtype=torch.long)
    for row, (ids, _) in enumerate(chunk):
        tokens[row, : len(ids)] = torch.tensor(ids)
    logits = model(tokens[:, :-1]).to(torch.float64)
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    # Target t + 1 is predicted at position t; the continuation's targets start after the start
    # marker and the prompt.
    return [log_probs[row, start : len(ids) - 1] for row, (ids, start) in enumerate(chunk)]


@dataclass(frozen=True)
class TruthScore:
    """What TinyTales says about one continuation of a prompt."""

    valid: bool  # prompt + text is a complete story and the generation ended there
    in_grammar: bool  # every generated token (the end too, if produced) is possible
    possible_tokens: int  # generated tokens before the first impossible one (all if in_grammar)
    log_prob: float  # true log-probability of those possible tokens (finite)

    @property
    def log_prob_per_char(self) -> float:
        """Mean true log-probability of the possible tokens; NaN if there are none."""
        return self.log_prob / self.possible_tokens if self.possible_tokens else math.nan


def truth_score(prompt: str, text: str, *, finished: bool) -> TruthScore:
    """Score the continuation `text` of `prompt` (its end too, if `finished`) under TinyTales."""
    if not isinstance(prompt, str) or not isinstance(text, str):
        raise TypeError("prompt and text must be str")
    if tinytales.END in prompt + text:
        raise ValueError("prompt and text must not contain END; pass finished=True instead")
    # Once a text leaves the grammar every later score is -inf, so an impossible prompt shows
    # up as an impossible first generated token.
    scores = truth_char_log_probs(prompt + text, end=bool(finished))[len(prompt) :]
    finite = torch.isfinite(scores)
    possible = int(finite.sum())
    in_grammar = possible == len(scores) and (
        len(scores) > 0 or tinytales.longest_possible_prefix(prompt) == len(prompt)
    )
    return TruthScore(
        valid=in_grammar and bool(finished),
        in_grammar=in_grammar,
        possible_tokens=possible,
        log_prob=float(scores[:possible].sum()),
    )


def truth_entropy(prompts: Sequence[str], texts: Sequence[str], finished: Sequence[bool]) -> float:
    """Mean entropy (nats) of the true next-character distribution at each generated token.

    How much choice the grammar itself leaves per character along these continuations (the end
    counts as a token where `finished`). Every prompt + text must be possible under TinyTales.
    """
    prompts, texts = _check_texts(prompts, name="prompts"), _check_texts(texts)
    if not len(prompts) == len(texts) == len(finished):
        raise ValueError(
            f"prompts, texts and finished must have equal lengths, got {len(prompts)}, "
            f"{len(texts)} and {len(finished)}"
        )
    total, count = 0.0, 0
    for prompt, text, done in zip(prompts, texts, finished):
        distributions = tinytales.next_char_distributions(prompt + text)
        steps = distributions[len(prompt) : len(prompt) + len(text) + bool(done)]
        total += sum(-sum(q * math.log(q) for q in d.values()) for d in steps)
        count += len(steps)
    if count == 0:
        raise ValueError("texts hold no generated token at all; entropy needs at least one")
    return total / count


def sampling_entropy(
    generation: Generation,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> float:
    """Mean entropy (nats) of the distributions the generated tokens were drawn from.

    The recorded logits go through the same sampling rule (`sampling.sampling_probs`) that drew
    the tokens: how much randomness the decoder injected per token; 0 for greedy decoding.
    """
    steps = drawn_step_logits(generation).double()
    # Small tensors: one thread avoids hand-off costs that dominate on a shared machine.
    with torch_threads(GENERATION_THREADS):
        probs = sampling_probs(steps, temperature=temperature, top_k=top_k, top_p=top_p)
        return float(entropy(probs).mean())


@dataclass(frozen=True)
class DegenerationRow:
    """One decoding method's line of the degeneration table."""

    method: str
    generations: int  # number of generations measured
    perplexity: float  # under the model, pooled per token (see `perplexity`)
    self_bleu: float  # Self-BLEU-4 over all the generations (0 = diverse, 1 = identical)
    zipf: float  # fitted Zipf coefficient s of the word frequencies
    repetition: float  # share of generations that end in a loop (see `ends_in_loop`)
    distinct: float  # distinct word n-grams / all word n-grams, pooled (metrics.distinct_n)
    valid: float  # share of generations that are complete valid TinyTales stories
    in_grammar: float  # share whose every generated character is possible under the grammar
    true_log_prob: float  # true log P per token, pooled over the tokens before any first mistake


def measure_decoding(
    method: str,
    prompts: Sequence[str],
    texts: Sequence[str],
    finished: Sequence[bool],
    *,
    log_probs: Sequence[float],
    distinct_order: int = 4,
) -> DegenerationRow:
    """Every measure of this module for one method's continuations `texts` of `prompts`.

    `log_probs[i]` is the model's total log-probability of text i's tokens (its characters, and
    the end marker where `finished[i]`), e.g. from `recorded.text_log_probs`.
    """
    prompts, texts = _check_texts(prompts, name="prompts"), _check_texts(texts)
    if not len(prompts) == len(texts) == len(finished) == len(log_probs):
        raise ValueError(
            "prompts, texts, finished and log_probs must have equal lengths, got "
            f"{len(prompts)}, {len(texts)}, {len(finished)} and {len(log_probs)}"
        )
    truths = [truth_score(p, t, finished=f) for p, t, f in zip(prompts, texts, finished)]
    return DegenerationRow(
        method=method,
        generations=len(texts),
        perplexity=perplexity(log_probs, tokens_per_text(texts, finished)),
        self_bleu=self_bleu(texts),
        zipf=zipf_coefficient(word_frequencies(texts)),
        repetition=loop_share(texts),
        distinct=distinct_n(texts, n=distinct_order),
        valid=sum(t.valid for t in truths) / len(truths),
        in_grammar=sum(t.in_grammar for t in truths) / len(truths),
        true_log_prob=_pooled_truth(truths),
    )


def _pooled_truth(truths: Sequence[TruthScore]) -> float:
    """Total true log-probability of the possible tokens over their number; NaN if none."""
    count = sum(t.possible_tokens for t in truths)
    return math.fsum(t.log_prob for t in truths) / count if count else math.nan


def format_table(
    rows: Sequence[DegenerationRow],
    *,
    paper: Mapping[str, tuple[str, Mapping[str, float]]] | None = None,
) -> str:
    """The rows as a fixed-width text table; with `paper`, the paper's matched row beside ours.

    `paper` maps a row's method to the paper's own label of the setting it stands for and that
    row's {"perplexity", "self_bleu", "zipf", "repetition"} (repetition in percent, as the
    paper prints it); methods it lacks show "-". The paper's repetition is its own measure, under
    its own name "Repetition %", not our "loop %".
    """
    head = f"{'method':<16}{'n':>4}{'ppl':>8}{'Self-BLEU4':>12}{'Zipf':>7}{'loop %':>8}"
    head += f"{'dist-4':>8}{'valid %':>9}{'in-gram %':>10}{'true nats/ch':>13}"
    if paper is not None:
        head += f"  | {'the paper:':<17}{'ppl':>6}{'S-BLEU4':>9}{'Zipf':>6}{'Repetition %':>14}"
    lines = [head, "-" * len(head)]
    for row in rows:
        line = (
            f"{row.method:<16}{row.generations:>4}{row.perplexity:>8.3f}{row.self_bleu:>12.2f}"
            f"{row.zipf:>7.2f}{100 * row.repetition:>8.1f}{row.distinct:>8.2f}"
            f"{100 * row.valid:>9.1f}{100 * row.in_grammar:>10.1f}{row.true_log_prob:>13.3f}"
        )
        if paper is not None:
            label, ref = paper.get(row.method, ("-", None))
            if ref is None:
                line += f"  | {label:<17}{'-':>6}{'-':>9}{'-':>6}{'-':>14}"
            else:
                line += (
                    f"  | {label:<17}{ref['perplexity']:>6.2f}{ref['self_bleu']:>9.2f}"
                    f"{ref['zipf']:>6.2f}{ref['repetition']:>14.2f}"
                )
        lines.append(line)
    return "\n".join(lines)
