"""Where the course's shipped files live (the repository's `data/` folder)."""

from __future__ import annotations

from pathlib import Path

# lessonlib is installed in editable mode, so the repository root is one level up.
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
