"""Any Hugging Face causal language model behind the course's `LanguageModel` interface.

`HFLanguageModel` answers the one call every course model answers (next-token logits for a
batch of contexts, with an optional KV cache), so `generate`, `sampling_probs`, the
speculative loop and the widgets run on GPT-2, SmolLM2 or the shipped token-level TinyTales
model unchanged. Its cache is the model's own `past_key_values`. `HFTokenizer` gives a
Hugging Face tokenizer the course tokenizer's methods. Loading never touches the network
unless asked to (`load_pretrained(..., online=True)`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import Tensor, nn

from lessonlib.bpe import byte_alphabet
from lessonlib.sampling import check_sampler
from lessonlib.validation import check_int, check_real

__all__ = [
    "HF_SAMPLING_DEFAULTS",
    "HFCache",
    "HFLanguageModel",
    "HFTokenizer",
    "hf_call",
    "hf_generate_kwargs",
    "load_pretrained",
]

HF_SAMPLING_DEFAULTS = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
"""What transformers 5.25 uses when sampling and nothing sets a stage: top-k 50 is on."""


class HFCache:
    """A Hugging Face KV cache with the course cache's length, reset, rollback and rows.

    It holds the model's own cache object (transformers' `DynamicCache`, passed in and returned
    as `cache`, which transformers before 5.25 called `past_key_values`).
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.past = None  # the model's Cache object, made by its first cached pass

    @property
    def length(self) -> int:
        """Number of positions cached."""
        return 0 if self.past is None else int(self.past.get_seq_length())

    def reset(self) -> None:
        """Forget every cached position."""
        self.past = None

    def truncate(self, length: int) -> None:
        """Forget every cached position from `length` on (a rollback)."""
        length = check_int("length", length, low=0, high=self.length)
        if length == 0:
            self.past = None
        elif length < self.length:
            # Transformers 5.25's crop takes how many positions to drop, as a negative number.
            self.past.crop(length - self.length)

    def keep_rows(self, rows: Tensor) -> None:
        """Keep only the sequences at `rows` (batch indices), in that order."""
        if self.past is not None:
            self.past.batch_select_indices(rows)
        self.batch_size = len(rows)


class HFLanguageModel(nn.Module):
    """A Hugging Face causal LM (`AutoModelForCausalLM`) as a course `LanguageModel`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "get_output_embeddings"):
            raise TypeError(
                "model must be a Hugging Face causal language model (a PreTrainedModel such as "
                f"AutoModelForCausalLM.from_pretrained(...) returns), got {type(model).__name__}"
            )
        self.hf = model
        self.vocab_size = int(model.get_output_embeddings().out_features)
        self.block_size = int(config.max_position_embeddings)
        source = str(getattr(config, "name_or_path", "") or type(model).__name__)
        # A folder on disk is named by its last part (no machine's paths in printed output).
        self.name = Path(source).name if Path(source).is_dir() else source

    def forward(self, token_ids: Tensor, kv_cache: HFCache | None = None) -> Tensor:
        """Logits (B, T, V) for the token after each position of token_ids (B, T)."""
        if kv_cache is None:
            return self.hf(input_ids=token_ids, use_cache=False).logits
        out = self.hf(input_ids=token_ids, cache=kv_cache.past, use_cache=True)
        kv_cache.past = out.cache
        return out.logits

    def new_kv_cache(self, batch_size: int) -> HFCache:
        """An empty cache for batch_size sequences."""
        return HFCache(batch_size)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.hf.parameters())


class HFTokenizer:
    """A Hugging Face tokenizer with the course tokenizer's methods; its end-of-text is the boundary.

    As with the character tokenizer, a context starts with the boundary token and a text ends
    when the model produces it. Prompts are encoded without any other special token.
    """

    def __init__(self, tokenizer) -> None:
        boundary_id = getattr(tokenizer, "eos_token_id", None)
        if boundary_id is None:
            raise ValueError(
                "tokenizer must have an end-of-text token (eos_token), which the course uses to "
                f"start a context and end a text; {type(tokenizer).__name__} has none"
            )
        self.hf = tokenizer
        self.boundary_id = int(boundary_id)
        self.boundary = str(tokenizer.eos_token)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Iterable[int]) -> str:
        """Text of a sequence of token ids."""
        ids = [int(i) for i in token_ids]
        for token_id in ids:
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"token id {token_id} is out of range; accepted ids are 0..{self.vocab_size - 1}"
                )
        return self.hf.decode(ids)

    def tokens(self, text: str) -> list[str]:
        """The tokens of `text`, each as the text it stands for."""
        return [self.hf.decode([i]) for i in self.encode(text)]

    def labels(self, size: int | None = None) -> Sequence[str]:
        """Printable label of every token id below `size` (default: the vocabulary)."""
        size = self.vocab_size if size is None else size
        ids = range(min(size, self.vocab_size))
        texts = self.hf.batch_decode([[i] for i in ids])
        pieces = self.hf.convert_ids_to_tokens(list(ids))
        labels = [_label(text, piece) for text, piece in zip(texts, pieces, strict=True)]
        # A model may have more output rows than the tokenizer has tokens (padding rows).
        return labels + [f"<{i}>" for i in range(len(labels), size)]

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size})"


def _label(text: str, piece: str) -> str:
    """A token's label: its text with spaces and newlines drawn, else its bytes in hex."""
    if "\ufffd" in text:
        # Part of a multi-byte character: no text of its own, so show its bytes (<0xE2>).
        data = _byte_level_bytes(piece)
        return "".join(f"<0x{b:02X}>" for b in data) if data else f"<{piece}>"
    if not text:
        return "\u2205"
    text = text.replace(" ", "\u2423").replace("\n", "\u21b5")
    # Other control characters would draw as missing glyphs: write them escaped.
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _byte_level_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level BPE token spells (GPT-2's alphabet), or None for another scheme."""
    byte_of = {char: byte for byte, char in byte_alphabet().items()}
    if not piece or any(c not in byte_of for c in piece):
        return None
    return bytes(byte_of[c] for c in piece)


def load_pretrained(
    name_or_path: str | Path, *, online: bool = False
) -> tuple[HFLanguageModel, HFTokenizer]:
    """A Hugging Face model and tokenizer in eval mode, from a folder or (online) the Hub.

    Offline (the default) only files on disk are read: a folder, or a Hub model already in the
    local cache; anything else raises OSError naming the model. The exact calls are
    `AutoTokenizer.from_pretrained` and `AutoModelForCausalLM.from_pretrained`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = str(name_or_path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a loading bar per call would fill a notebook's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not online)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=not online)
    except OSError as error:
        where = "the Hub" if online else "this machine (offline: nothing is downloaded)"
        raise OSError(
            f"could not load the model {source!r} from {where}: {str(error).splitlines()[0]}"
            + ("" if online else " Pass online=True to download it from the Hugging Face Hub.")
        ) from error
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    return HFLanguageModel(model).eval(), HFTokenizer(tokenizer)


def hf_generate_kwargs(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    eta_cutoff: float | None = None,
    repetition_penalty: float = 1.0,
) -> dict[str, object]:
    """The `model.generate(...)` keyword arguments that do what these course settings do.

    Temperature 0 is greedy (`do_sample=False`). Every stage is named even when off (top_k=0,
    top_p=1.0, ...), so a model's own generation_config.json cannot switch one on unseen.
    Transformers runs the stages in the course's default order (`lessonlib.sampling.DEFAULT_ORDER`).
    """
    check_sampler(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        typical_p=typical_p,
        eta_cutoff=eta_cutoff,
    )
    check_real("repetition_penalty", repetition_penalty, low=0.0, low_open=True)
    penalty = {} if repetition_penalty == 1.0 else {"repetition_penalty": repetition_penalty}
    if temperature == 0:
        return {"do_sample": False, **penalty}
    kwargs: dict[str, object] = {
        "do_sample": True,
        "temperature": temperature,
        "top_k": 0 if top_k is None else top_k,
        "top_p": 1.0 if top_p is None else top_p,
    }
    if min_p is not None:
        kwargs["min_p"] = min_p
    kwargs["typical_p"] = 1.0 if typical_p is None else typical_p
    kwargs["epsilon_cutoff"] = 0.0
    kwargs["eta_cutoff"] = 0.0 if eta_cutoff is None else eta_cutoff
    return {**kwargs, **penalty}


def hf_call(kwargs: dict[str, object], **extra: object) -> str:
    """`model.generate(...)` as code, naming only the arguments that differ from the defaults."""
    named = {**extra, **kwargs}
    shown = [f"{k}={v!r}" for k, v in named.items() if HF_SAMPLING_DEFAULTS.get(k, object()) != v]
    return f"model.generate(..., {', '.join(shown)})"
