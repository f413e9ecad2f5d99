"""Byte-level BPE over TinyTales: fit the merges, and look inside what a tokenizer does.

The token-level model of lesson 11 reads TinyTales through this tokenizer instead of one
character per token. Fitting is the `tokenizers` library's (the one behind Hugging Face's fast
tokenizers); this module only picks its settings, and lists merges and alternative splits for
the lesson. No models here (see `lessonlib.token_model`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lessonlib.validation import check_int

END_OF_TEXT = "<|endoftext|>"
"""The one special token: it starts a context and ends a story (GPT-2's convention)."""

VOCAB_SIZE = 512
"""Tokens of the shipped tokenizer: 256 bytes, the end-of-text token and 255 merges."""


def fit_bpe(stories: Sequence[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE tokenizer fit to `stories`, GPT-2 style: spaces start words."""
    check_int("vocab_size", vocab_size, low=258)
    tokenizer = Tokenizer(models.BPE())
    # Byte-level: every text can be encoded (256 byte tokens), and merges never cross a word.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(stories, trainer)
    return tokenizer


def merges(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """The merges in the order they were learned, in the byte-level spelling ('Ġ' is a space)."""
    return [tuple(pair) for pair in json.loads(tokenizer.to_str())["model"]["merges"]]


def readable(token: str) -> str:
    """A byte-level token spelled with a visible space ('Ġ' becomes '␣')."""
    return token.replace("\u0120", "\u2423").replace("\u010a", "\u21b5")


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that spells it in a token."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def merge_pair(symbols: Sequence[str], pair: tuple[str, str]) -> list[str]:
    """`symbols` with every occurrence of `pair` side by side joined, left to right, no overlaps."""
    first, second = pair
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2  # the pair is used up: "a a a" with ("a", "a") gives "aa a", never "a aa"
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def apply_merges(word: str, merge_list: Sequence[tuple[str, str]]) -> list[str]:
    """BPE's encoding of one word: start from its characters, apply each merge in learned order."""
    symbols = list(word)
    for pair in merge_list:
        if len(symbols) == 1:
            break
        symbols = merge_pair(symbols, pair)
    return symbols


def words(tokenizer: Tokenizer, text: str) -> list[str]:
    """The pieces BPE works on inside `text` (words with their leading space, byte-level spelled)."""
    return [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]


def merges_reproduce(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[int, int]:
    """(agreeing, total) words of `texts` whose `apply_merges` split is the tokenizer's own."""
    merge_list = merges(tokenizer)
    pieces = {piece for text in texts for piece in words(tokenizer, text)}
    agree = sum(
        apply_merges(piece, merge_list) == [t.value for t in tokenizer.model.tokenize(piece)]
        for piece in pieces
    )
    return agree, len(pieces)


def spellings(tokenizer: Tokenizer, text: str, limit: int = 1000) -> list[list[str]]:
    """Token sequences (vocabulary spelling) that spell `text`, fewest tokens first (<= limit)."""
    check_int("limit", limit, low=1)
    vocab = {piece: token for token, piece in _token_bytes(tokenizer).items()}
    data = text.encode("utf-8")
    found: list[list[str]] = []

    def extend(start: int, so_far: list[str]) -> None:
        if len(found) >= limit:
            return
        if start == len(data):
            found.append(list(so_far))
            return
        for end in range(len(data), start, -1):  # longest piece first
            token = vocab.get(data[start:end])
            if token is not None:
                extend(end, [*so_far, token])

    extend(0, [])
    return sorted(found, key=len)


def _token_bytes(tokenizer: Tokenizer) -> dict[str, bytes]:
    """Each token of the vocabulary and the bytes it spells (special tokens left out)."""
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    byte_of = {char: byte for byte, char in byte_alphabet().items()}
    return {
        token: bytes(byte_of[c] for c in token)
        for token in tokenizer.get_vocab()
        if token not in special
    }
