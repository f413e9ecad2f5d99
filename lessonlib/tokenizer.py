"""Tokenizers: what every course tokenizer offers, and the character tokenizer of TinyTales."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What every course tokenizer offers (the character one here, BPE ones in lessonlib.hf)."""

    vocab_size: int  # number of distinct tokens
    boundary_id: int  # starts every context and ends a text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        ...

    def decode(self, token_ids: Iterable[int]) -> str:
        """Text of a sequence of token ids."""
        ...

    def labels(self) -> Sequence[str]:
        """Printable label of every token, in id order."""
        ...


class CharTokenizer:
    """Maps characters to ids and back; `boundary` marks the start and end of a text."""

    def __init__(self, chars: str, *, boundary: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError(f"chars must not repeat a character, got {chars!r}")
        if len(boundary) != 1 or boundary not in chars:
            raise ValueError(f"boundary must be one character of chars, got {boundary!r}")
        self.chars = chars
        self.boundary = boundary
        self._ids = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens."""
        return len(self.chars)

    @property
    def boundary_id(self) -> int:
        """Token id of the boundary character."""
        return self._ids[self.boundary]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; raises ValueError on a character outside the alphabet."""
        ids = []
        for position, char in enumerate(text):
            if char not in self._ids:
                raise ValueError(
                    f"text contains {char!r} at position {position}, which is not in the "
                    f"tokenizer's alphabet {self.chars!r}"
                )
            ids.append(self._ids[char])
        return ids

    def decode(self, token_ids: Iterable[int]) -> str:
        """Text of a sequence of token ids."""
        out = []
        for token_id in token_ids:
            token_id = int(token_id)
            if not 0 <= token_id < len(self.chars):
                raise ValueError(
                    f"token id {token_id} is out of range; accepted ids are 0..{len(self.chars) - 1}"
                )
            out.append(self.chars[token_id])
        return "".join(out)

    def labels(self) -> Sequence[str]:
        """Printable label of every token, in id order (the boundary shown as itself or '\\n')."""
        return [repr(c)[1:-1] if c == "\n" else c for c in self.chars]

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, boundary={self.boundary!r})"
