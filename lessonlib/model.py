"""The course's tiny GPT: a pre-LayerNorm decoder with learned positions and a KV cache.

It answers the same call as every other course model (see `lessonlib.generation`):
`model(token_ids, kv_cache=None)` returns next-token logits at every position.
This module is not about sampling or the generation loop; those live in
`lessonlib.sampling` and `lessonlib.generation`.

Deliberately simplified: no dropout, no weight tying, no bias-free layers, no flash
tricks beyond `scaled_dot_product_attention`. It is small enough to train on a laptop CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lessonlib.validation import check_int


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the GPT; every field is saved beside the checkpoint."""

    vocab_size: int  # number of distinct tokens (characters of the corpus alphabet)
    block_size: int = 512  # longest context the model reads, in tokens (one learned position each)
    n_layer: int = 4  # number of transformer blocks
    n_head: int = 4  # attention heads per block; n_embd must be divisible by it
    n_embd: int = 128  # width of the residual stream (embedding size)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd must be divisible by n_head, got n_embd={self.n_embd}, "
                f"n_head={self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON."""
        return asdict(self)


class KVCache:
    """Keys and values of the tokens seen so far, per layer, in one buffer that grows by doubling.

    A cached forward pass writes the new tokens' keys and values at positions
    `length .. length + T - 1` and attends over `0 .. length + T - 1`; nothing is
    concatenated per step. The buffer starts small and doubles when full (up to the model's
    block size); `generate` and beam search reserve the room they will need at once instead.
    """

    INITIAL_CAPACITY = 128  # positions allocated at first; doubled when a longer context arrives

    def __init__(self, config: GPTConfig, batch_size: int, *, dtype: torch.dtype, device) -> None:
        check_int("batch_size", batch_size, low=1)
        self.max_length = config.block_size  # the cache never holds more positions than this
        capacity = min(self.INITIAL_CAPACITY, config.block_size)
        # (layer, key or value, batch, head, position, head_dim): a layer's keys and values sit
        # side by side, so one copy stores both. Uninitialised: only positions below `length`
        # are ever read, and filling memory nobody reads would cost a pass (and make it resident).
        shape = (config.n_layer, 2, batch_size, config.n_head, capacity, config.head_dim)
        self._set_buffer(torch.empty(shape, dtype=dtype, device=device))
        self.length = 0  # number of positions already filled

    def _set_buffer(self, buffer: Tensor) -> None:
        self.buffer = buffer
        # Views, not copies: (layer, batch, head, position, head_dim) each.
        self.keys, self.values = buffer[:, 0], buffer[:, 1]
        # One (2, batch, head, position, head_dim) view per layer, made once per buffer.
        # (Indexing, not unbind: unbind's views may not be written in place when grad is on.)
        self._layers = [buffer[i] for i in range(buffer.shape[0])]

    @property
    def batch_size(self) -> int:
        """Number of sequences the cache holds."""
        return self.buffer.shape[2]

    @property
    def capacity(self) -> int:
        """Positions allocated now (grows up to max_length)."""
        return self.buffer.shape[4]

    def reserve(self, length: int) -> None:
        """Make room for `length` positions, doubling the buffer as often as needed."""
        if length > self.max_length:
            raise ValueError(f"length must be <= max_length={self.max_length}, got {length}")
        capacity = self.capacity
        if length <= capacity:
            return
        while capacity < length:
            capacity = min(2 * capacity, self.max_length)
        shape = self.buffer.shape
        grown = self.buffer.new_empty(*shape[:4], capacity, shape[5])
        grown[..., : self.length, :] = self.buffer[..., : self.length, :]
        self._set_buffer(grown)

    def keep_rows(self, rows: Tensor) -> None:
        """Keep only the sequences at `rows` (batch indices), in that order; may repeat rows."""
        self._set_buffer(self.buffer[:, :, rows, :, : max(self.length, 1)])

    def layers(self) -> list[Tensor]:
        """Each layer's (2, batch, head, position, head_dim) view: keys, then values."""
        return self._layers

    def reset(self) -> None:
        """Forget every cached position (the buffer is reused)."""
        self.length = 0

    def truncate(self, length: int) -> None:
        """Forget every cached position from `length` on (a rollback): nothing is copied."""
        # Positions at or past `length` are never read and the next pass overwrites them.
        self.length = check_int("length", length, low=0, high=self.length)

    def nbytes_per_token(self) -> int:
        """Bytes the cache spends on one token of one sequence (keys and values, all layers)."""
        n_layer, two, _, n_head, _, head_dim = self.buffer.shape
        return n_layer * two * n_head * head_dim * self.buffer.element_size()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the past only."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: Tensor, cache: Tensor | None, start: int) -> Tensor:
        """Attend from the T new positions in x; `cache` holds this layer's keys and values."""
        B, T, C = x.shape
        # (B, T, 3C) -> (3, B, n_head, T, head_dim): queries, keys, values as views, no copies.
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q = qkv[0]
        if cache is None or start == 0:
            # All positions are new: the ordinary causal mask is exactly right.
            if cache is not None:
                cache[:, :, :, :T] = qkv[1:]
            y = F.scaled_dot_product_attention(q, qkv[1], qkv[2], is_causal=True)
        else:
            # The new keys and values in one copy, then all of them; narrow(3, ...) slices
            # positions (dim 3 of the (2, B, n_head, position, head_dim) cache) in one call.
            cache.narrow(3, start, T).copy_(qkv[1:])
            k_all, v_all = cache.narrow(3, 0, start + T)
            if T == 1:
                # One new token may look at every cached position: no mask needed.
                y = F.scaled_dot_product_attention(q, k_all, v_all)
            else:
                # New token i (at position start + i) sees positions 0 .. start + i.
                visible = torch.ones(T, start + T, dtype=torch.bool, device=x.device)
                visible = visible.tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=visible)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
        )

    def forward(self, x: Tensor, cache: Tensor | None, start: int) -> Tensor:
        """Apply the block to the new positions."""
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A tiny decoder-only transformer over characters."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init_weights)
        # Residual projections start smaller so the stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens."""
        return self.config.vocab_size

    @property
    def block_size(self) -> int:
        """Longest context the model reads."""
        return self.config.block_size

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for `batch_size` sequences, on the model's device and dtype."""
        weight = self.token_embedding.weight
        return KVCache(self.config, batch_size, dtype=weight.dtype, device=weight.device)

    def forward(self, token_ids: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """Next-token logits (B, T, V) for token ids (B, T); with a cache, T new tokens only."""
        self._check_input(token_ids, kv_cache)
        start = 0 if kv_cache is None else kv_cache.length
        T = token_ids.shape[1]
        if kv_cache is not None:
            kv_cache.reserve(start + T)
        # Positions start .. start + T - 1 are consecutive: a slice of the table, not a lookup.
        positions = self.position_embedding.weight[start : start + T]
        x = self.token_embedding(token_ids) + positions
        layer_caches = [None] * len(self.blocks) if kv_cache is None else kv_cache.layers()
        for block, cache in zip(self.blocks, layer_caches, strict=True):
            x = block(x, cache, start)
        if kv_cache is not None:
            kv_cache.length += T
        return self.lm_head(self.ln_f(x))

    def _check_input(self, token_ids: Tensor, kv_cache: KVCache | None) -> None:
        if not isinstance(token_ids, Tensor):
            raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
        if token_ids.dtype != torch.long:
            raise TypeError(f"token_ids must have dtype torch.long, got {token_ids.dtype}")
        if token_ids.dim() != 2 or token_ids.shape[1] == 0:
            raise ValueError(
                "token_ids must have shape (batch, time) with time >= 1, "
                f"got {tuple(token_ids.shape)}"
            )
        low, high = (int(bound) for bound in torch.aminmax(token_ids))
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"token_ids contains {bad}; accepted ids are 0..{self.vocab_size - 1}")
        start = 0 if kv_cache is None else kv_cache.length
        if start + token_ids.shape[1] > self.block_size:
            where = "" if kv_cache is None else f" after {start} cached positions"
            raise ValueError(
                f"token_ids has {token_ids.shape[1]} positions{where}, but the model reads at "
                f"most block_size={self.block_size}; crop the context to its last "
                f"{self.block_size} tokens (generate() does this for you)"
            )
        if kv_cache is not None and kv_cache.batch_size != token_ids.shape[0]:
            raise ValueError(
                f"kv_cache holds {kv_cache.batch_size} sequences but token_ids has batch "
                f"{token_ids.shape[0]}; make a cache with model.new_kv_cache({token_ids.shape[0]})"
            )
