"""Character n-gram model counted from stories: the cheapest draft for speculative decoding.

It answers the same call as every course model (`lessonlib.generation.LanguageModel`): logits
for the next character at every position. The probabilities are counts of what followed the
last n - 1 characters in the stories; a context never seen backs off to its longest suffix that
was seen (down to no context at all: the character frequencies). Deliberately simplified: no
discounting or interpolation between orders (Kneser-Ney), only add-`smoothing` counts on the
context used. Not about training a network (lessonlib.train) or about sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.checkpoint import load_metadata
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_real

__all__ = ["NGramCounts", "NGramModel", "count_ngrams", "training_ngram"]

_STORIES_PER_CHUNK = 4000  # stories counted at once: about 1.2 M tokens, some 10 MB per tensor


@dataclass(frozen=True)
class NGramCounts:
    """How often each character followed each context of up to order - 1 characters."""

    order: int  # n: a context holds at most n - 1 characters
    vocab_size: int
    # keys[L]: the contexts of length L seen, as sorted ids sum(token[t - j] * V**j, j < L)
    # (the newest token counts least); keys[0] is the one empty context.
    keys: tuple[Tensor, ...]
    counts: tuple[Tensor, ...]  # counts[L][i, c]: how often c followed context keys[L][i]


def count_ngrams(stories: Sequence[str], tokenizer: CharTokenizer, *, order: int) -> NGramCounts:
    """Count, in `stories` read as one corpus text, every character after each shorter context."""
    check_int("order", order, low=1)
    vocab = tokenizer.vocab_size
    if vocab ** (order - 1) >= 2**62:
        raise ValueError(f"order must keep vocab_size**(order - 1) below 2**62, got {order}")
    if not isinstance(stories, Sequence) or isinstance(stories, str) or not stories:
        raise TypeError(f"stories must be a non-empty sequence of str, got {stories!r}")
    pairs: list[list[Tensor]] = [[] for _ in range(order)]
    for start in range(0, len(stories), _STORIES_PER_CHUNK):
        chunk = stories[start : start + _STORIES_PER_CHUNK]
        # Each chunk reads like the corpus the GPT trains on: a boundary, then every story and
        # its end. (Contexts across two chunks are lost: a handful in a million.)
        ids = torch.tensor(tokenizer.encode(tokenizer.boundary + tinytales.corpus_text(chunk)))
        following = ids[1:]
        # key[i]: the context that ends at token t and predicts ids[t + 1]; a context of
        # `length` tokens needs t >= length - 1, so each longer one drops the first position.
        key = torch.zeros(len(following), dtype=torch.long)
        for length in range(order):
            if length == 1:
                key = ids[:-1].clone()
            elif length > 1:
                # Extend every context by one older token: tokens t - length + 1 .. t.
                key = key[1:] + ids[: len(key) - 1] * vocab ** (length - 1)
                following = following[1:]
            # One id per (context, next character) pair, then count the distinct ones.
            found, times = torch.unique(key * vocab + following, return_counts=True)
            pairs[length].append(torch.stack([found, times]))
    keys, counts = [], []
    for length in range(order):
        found, times = torch.cat(pairs[length], dim=1)
        context, character = found // vocab, found % vocab
        unique, row = torch.unique(context, return_inverse=True)  # sorted, as lookup needs
        table = torch.zeros(len(unique), vocab, dtype=torch.long)
        table.index_put_((row, character), times, accumulate=True)
        keys.append(unique)
        counts.append(table)
    return NGramCounts(order, vocab, tuple(keys), tuple(counts))


class NGramModel:
    """P(next character | the longest seen suffix of the last order - 1), from counts.

    `smoothing` is added to every count of the context used before normalising (0: raw
    frequencies, where characters never seen after it get logit -inf). Keeps no KV cache.
    """

    def __init__(self, counts: NGramCounts, *, smoothing: float = 0.0) -> None:
        if not isinstance(counts, NGramCounts):
            raise TypeError(f"counts must be NGramCounts, got {type(counts).__name__}")
        self.smoothing = check_real("smoothing", smoothing, low=0.0)
        self.order = counts.order
        self.vocab_size: int = counts.vocab_size
        # The model reads at most order - 1 tokens; generate() crops the context to this.
        self.block_size: int = max(1, counts.order - 1)
        self.keys = counts.keys
        # Every context's row of log-probabilities, all lengths in one table: row offset[L] + i
        # is context keys[L][i].
        smoothed = torch.cat(counts.counts).double() + self.smoothing
        self.log_probs = (smoothed / smoothed.sum(dim=1, keepdim=True)).log().float()
        sizes = torch.tensor([0, *(len(k) for k in counts.keys)])
        self.offsets = sizes.cumsum(0)[:-1].tolist()

    def new_kv_cache(self, batch_size: int) -> None:
        """None: counting needs no cache (the LanguageModel interface asks for the method)."""
        del batch_size

    def __call__(self, token_ids: Tensor, kv_cache: object = None) -> Tensor:
        """Logits (B, T, V), log-probabilities, of the token after each position of token_ids."""
        del kv_cache  # part of the shared interface; nothing to cache
        self._check(token_ids)
        batch, steps = token_ids.shape
        rows = torch.full((batch, steps), self.offsets[0], dtype=torch.long)  # no context
        key = torch.zeros(batch, steps, dtype=torch.long)
        for length in range(1, self.order):
            if length > steps:
                break
            # The context of `length` tokens ending at each position t >= length - 1.
            key = key[:, 1:] if length > 1 else key
            key = key + token_ids[:, : steps - length + 1] * self.vocab_size ** (length - 1)
            found = self._find(length, key)
            # Where the longer context was seen, it replaces the shorter one.
            tail = rows[:, length - 1 :]
            rows[:, length - 1 :] = torch.where(found >= 0, self.offsets[length] + found, tail)
        return self.log_probs[rows]

    def _find(self, length: int, key: Tensor) -> Tensor:
        """Index of each key among the seen contexts of `length` tokens, -1 where unseen."""
        known = self.keys[length]
        index = torch.searchsorted(known, key).clamp(max=len(known) - 1)
        return torch.where(known[index] == key, index, -1)

    def _check(self, token_ids: object) -> None:
        if not isinstance(token_ids, Tensor):
            raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
        if token_ids.dtype != torch.long:
            raise TypeError(f"token_ids must have dtype torch.long, got {token_ids.dtype}")
        if token_ids.dim() != 2 or token_ids.shape[1] == 0:
            raise ValueError(
                "token_ids must have shape (batch, time) with time >= 1, "
                f"got {tuple(token_ids.shape)}"
            )
        if bool((token_ids < 0).any()) or bool((token_ids >= self.vocab_size).any()):
            bad = token_ids[(token_ids < 0) | (token_ids >= self.vocab_size)][0]
            raise ValueError(
                f"token_ids contains {int(bad)}; accepted ids are 0..{self.vocab_size - 1}"
            )


def training_ngram(
    order: int = 5, *, stories: int | None = None, smoothing: float = 0.0
) -> tuple[NGramModel, CharTokenizer]:
    """An n-gram counted from the shipped GPT's training stories (the first `stories` of them),
    and the GPT's tokenizer."""
    metadata = load_metadata()
    corpus = metadata["corpus"]
    count = corpus["stories"] if stories is None else check_int("stories", stories, low=1)
    tokenizer = CharTokenizer(metadata["vocabulary"], boundary=metadata["boundary"])
    texts = tinytales.generate_stories(min(count, corpus["stories"]), seed=corpus["seed"])
    return NGramModel(count_ngrams(texts, tokenizer, order=order), smoothing=smoothing), tokenizer
