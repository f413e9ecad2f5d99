"""A quick check that a learner's environment can run the course, with a fix for each failure."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from lessonlib.checkpoint import checkpoint_paths
from lessonlib.token_model import TOKEN_MODEL_DIR


@dataclass(frozen=True)
class Check:
    """One line of the environment report."""

    name: str  # what was checked
    ok: bool  # whether it passed
    fix: str  # what to do when it did not


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_environment() -> list[Check]:
    """Check Python, the course packages and the shipped model files."""
    checks = [
        Check("Python 3.11 or newer", sys.version_info >= (3, 11), "install Python 3.11+"),
    ]
    modules = ("torch", "numpy", "matplotlib", "ipywidgets", "ipympl", "safetensors")
    for module in (*modules, "transformers", "tokenizers"):  # the last two for lesson 11
        checks.append(
            Check(f"package {module}", _importable(module), "run `make lab` from the course folder")
        )
    weights, metadata = checkpoint_paths()
    checks.append(
        Check(
            "shipped model in data/",
            weights.exists() and metadata.exists(),
            "restore data/ from git, or retrain with `make train`",
        )
    )
    checks.append(
        Check(
            "token model in data/ (lesson 11)",
            (TOKEN_MODEL_DIR / "config.json").exists(),
            "restore data/ from git, or retrain with `make train TRAIN_ARGS='--preset tokens'`",
        )
    )
    return checks


def environment_report(checks: list[Check]) -> str:
    """One line per check: 'ok' or 'MISSING' with the fix."""
    lines = [
        f"{'ok' if c.ok else 'MISSING':8} {c.name}" + ("" if c.ok else f" -> {c.fix}")
        for c in checks
    ]
    return "\n".join(lines)
