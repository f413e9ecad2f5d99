"""Character bigram over US Census first names: the course's first toy language model.

It answers the same call as the GPT (`forward(token_ids, kv_cache=None)` returning logits
for every position, plus `vocab_size`, `block_size` and `new_kv_cache`), so one `generate`
serves both. Deliberately simplified: no training loop; the counts were tallied once by
data/build_names_bigram.py (see data/names_bigram.md) and the model only smooths and
normalises them. Not about sampling: that lives in lessonlib.sampling.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from lessonlib.paths import DATA_DIR
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_real

BOUNDARY = "·"  # U+00B7: marks both the start and the end of a name
BIGRAM_SYMBOLS = BOUNDARY + "abcdefghijklmnopqrstuvwxyz"
COUNTS_PATH = DATA_DIR / "names_bigram_counts.csv"


def parse_bigram_counts(text: str, *, source: str = "bigram counts") -> torch.Tensor:
    """27x27 int64 counts (row = current symbol, column = next) from the CSV text."""
    rows = list(csv.reader(io.StringIO(text)))
    size = len(BIGRAM_SYMBOLS)
    expected_header = ["", *BIGRAM_SYMBOLS]
    if not rows or rows[0] != expected_header:
        found = repr(",".join(rows[0])) if rows and rows[0] else "an empty first line"
        raise ValueError(f"{source}: header must be {','.join(expected_header)!r}, got {found}")
    body = rows[1:]
    if len(body) != size:
        raise ValueError(f"{source}: expected {size} rows after the header, got {len(body)}")
    counts = torch.zeros(size, size, dtype=torch.int64)
    for i, (symbol, row) in enumerate(zip(BIGRAM_SYMBOLS, body, strict=True)):
        line = i + 2  # 1-based, after the header
        if len(row) != size + 1 or row[0] != symbol:
            raise ValueError(
                f"{source}: line {line} must be {symbol!r} followed by {size} counts, "
                f"got {row[:1]} and {len(row) - 1} values"
            )
        for j, cell in enumerate(row[1:]):
            if not (cell.isascii() and cell.isdigit()):
                raise ValueError(
                    f"{source}: line {line}, column {BIGRAM_SYMBOLS[j]!r}: count must be a "
                    f"non-negative integer, got {cell!r}"
                )
            counts[i, j] = int(cell)
    return counts


def load_bigram_counts(path: Path = COUNTS_PATH) -> torch.Tensor:
    """27x27 int64 bigram counts read from the shipped CSV (or `path`)."""
    return parse_bigram_counts(path.read_text(encoding="utf-8"), source=str(path))


class BigramModel(torch.nn.Module):
    """P(next symbol | current symbol) from add-`smoothing` counts; logits are log-probabilities.

    `counts[i, j]` counts symbol `symbols[j]` following `symbols[i]`.
    `smoothing` is added to every count before normalising each row (1 = Laplace smoothing,
    so every symbol stays possible; 0 = raw frequencies, where unseen pairs get logit -inf).
    """

    def __init__(
        self, counts: torch.Tensor, *, smoothing: float = 1.0, symbols: str = BIGRAM_SYMBOLS
    ) -> None:
        super().__init__()
        if not isinstance(counts, torch.Tensor):
            raise TypeError(f"counts must be a torch.Tensor, got {type(counts).__name__}")
        if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"counts must have shape (V, V), got {tuple(counts.shape)}")
        if len(symbols) != counts.shape[0] or len(set(symbols)) != len(symbols):
            raise ValueError(
                f"symbols must be {counts.shape[0]} distinct characters (one per row of "
                f"counts), got {symbols!r}"
            )
        if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool:
            raise TypeError(f"counts must have an integer dtype, got {counts.dtype}")
        if bool((counts < 0).any()):
            raise ValueError("counts must be non-negative, got a negative entry")
        check_real("smoothing", smoothing, low=0)
        smoothed = counts.to(torch.float64) + smoothing
        row_sums = smoothed.sum(dim=1, keepdim=True)
        if bool((row_sums == 0).any()):
            empty = [int(i) for i in torch.nonzero(row_sums.squeeze(1) == 0).flatten()]
            raise ValueError(
                f"rows {empty} have no counts, so smoothing must be > 0, got {smoothing!r}"
            )
        self.vocab_size: int = int(counts.shape[0])
        # The bigram conditions on one symbol; generate() crops the context to this length.
        self.block_size: int = 1
        self.smoothing = float(smoothing)
        self.symbols = symbols
        self.register_buffer("counts", counts.to(torch.int64).clone())
        # Normalise in float64 so each row sums to 1 before rounding to float32.
        self.register_buffer("log_probs", torch.log(smoothed / row_sums).to(torch.float32))

    def forward(self, token_ids: torch.Tensor, kv_cache: object = None) -> torch.Tensor:
        """Logits (B, T, V) for the next token at every position of `token_ids` (B, T)."""
        # kv_cache is part of the shared model interface; a bigram has nothing to cache.
        del kv_cache
        if not isinstance(token_ids, torch.Tensor):
            raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
        if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
            raise TypeError(f"token_ids must have an integer dtype, got {token_ids.dtype}")
        if token_ids.dim() != 2:
            raise ValueError(
                f"token_ids must have shape (B, T), got {token_ids.dim()} dimensions "
                f"(shape {tuple(token_ids.shape)})"
            )
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.vocab_size):
            bad = token_ids[(token_ids < 0) | (token_ids >= self.vocab_size)][0]
            raise ValueError(
                f"token_ids contains {int(bad)}; accepted ids are 0..{self.vocab_size - 1}"
            )
        # Advanced indexing copies, so callers may edit the result without touching the model.
        return self.log_probs[token_ids.long()]

    def new_kv_cache(self, batch_size: int) -> None:
        """No cache for a bigram (the GPT returns one); still rejects a bad `batch_size`."""
        check_int("batch_size", batch_size, low=1)

    def probs(self, context_char: str) -> torch.Tensor:
        """Probabilities (V,) of the next symbol after `context_char`."""
        if not isinstance(context_char, str) or len(context_char) != 1:
            raise ValueError(f"context_char must be one character, got {context_char!r}")
        if context_char not in self.symbols:
            raise ValueError(f"context_char must be one of {self.symbols!r}, got {context_char!r}")
        return self.log_probs[self.symbols.index(context_char)].exp()

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, smoothing={self.smoothing}"


def load_bigram(*, smoothing: float = 1.0) -> tuple[BigramModel, CharTokenizer]:
    """The census-names bigram model and its tokenizer (`·` is the boundary)."""
    model = BigramModel(load_bigram_counts(), smoothing=smoothing)
    tokenizer = CharTokenizer(BIGRAM_SYMBOLS, boundary=BOUNDARY)
    return model, tokenizer
