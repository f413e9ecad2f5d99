"""Save and load the shipped GPT: weights as safetensors, everything else as JSON.

Nothing here unpickles: safetensors holds only tensors, so loading a checkpoint can never
run code. This module is not about training (see `lessonlib.train`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lessonlib.model import GPT, GPTConfig
from lessonlib.paths import DATA_DIR
from lessonlib.tokenizer import CharTokenizer

CHECKPOINT_NAME = "tinytales_gpt"  # data/tinytales_gpt.safetensors + data/tinytales_gpt.json
# The much smaller draft model of speculative decoding: load_model(name=DRAFT_CHECKPOINT_NAME).
DRAFT_CHECKPOINT_NAME = "tinytales_draft"


def checkpoint_paths(
    directory: Path | str = DATA_DIR, name: str = CHECKPOINT_NAME
) -> tuple[Path, Path]:
    """Paths of the weights file and the metadata file of a checkpoint."""
    directory = Path(directory)
    return directory / f"{name}.safetensors", directory / f"{name}.json"


def save_checkpoint(
    model: GPT,
    tokenizer: CharTokenizer,
    metadata: dict[str, Any],
    directory: Path | str = DATA_DIR,
    name: str = CHECKPOINT_NAME,
) -> tuple[Path, Path]:
    """Write the weights and a JSON file with the config, the vocabulary and `metadata`."""
    weights_path, meta_path = checkpoint_paths(directory, name)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(tensors, str(weights_path))
    record = {
        "config": model.config.to_dict(),
        "vocabulary": tokenizer.chars,
        "boundary": tokenizer.boundary,
        "torch_version": torch.__version__,
        **metadata,
    }
    meta_path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return weights_path, meta_path


def load_metadata(directory: Path | str = DATA_DIR, name: str = CHECKPOINT_NAME) -> dict[str, Any]:
    """The JSON record of a checkpoint (config, vocabulary, corpus, losses, versions)."""
    _, meta_path = checkpoint_paths(directory, name)
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no checkpoint metadata at {meta_path}; train one with `python -m lessonlib.train`"
        )
    return json.loads(meta_path.read_text(encoding="utf-8"))


def load_model(
    directory: Path | str = DATA_DIR, name: str = CHECKPOINT_NAME
) -> tuple[GPT, CharTokenizer]:
    """A shipped GPT in eval mode and its tokenizer (the course GPT unless `name` says another)."""
    weights_path, _ = checkpoint_paths(directory, name)
    metadata = load_metadata(directory, name)
    model = GPT(GPTConfig(**metadata["config"]))
    model.load_state_dict(load_file(str(weights_path)))
    model.eval()
    tokenizer = CharTokenizer(metadata["vocabulary"], boundary=metadata["boundary"])
    return model, tokenizer
