"""Count character bigrams over US Census first names and write data/names_bigram_counts.csv.

The names come from the data files that the PyPI package `names` 0.3.0 ships
(`dist.male.first`, `dist.female.first`: the 1990 US Census first-name lists, public
domain). Each distinct name counts once, however common it is (the lists' frequency
columns are ignored), so the table describes spelling, not popularity.

Rerun from the repository root (needs network access to PyPI, about 5 s):

    .venv/bin/python data/build_names_bigram.py

Without `--names-dir` it installs names==0.3.0 into a temporary folder with
`pip install --target` and deletes it afterwards; `names` is not a course dependency.
It rewrites data/names_bigram_counts.csv and data/names_bigram.md (provenance, with the
CSV's sha256 that tests/test_bigram.py checks).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import itertools
import string
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES_VERSION = "0.3.0"
NAME_FILES = ("dist.male.first", "dist.female.first")
BOUNDARY = "·"  # U+00B7, marks the start and the end of a name
SYMBOLS = BOUNDARY + string.ascii_lowercase
DATA_DIR = Path(__file__).resolve().parent
CSV_PATH = DATA_DIR / "names_bigram_counts.csv"
PROVENANCE_PATH = DATA_DIR / "names_bigram.md"


def install_names_package(target: Path) -> Path:
    """Install names==0.3.0 into `target` (no dependencies) and return its package folder."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            f"names=={NAMES_VERSION}",
        ],
        check=True,
    )
    if not (target / f"names-{NAMES_VERSION}.dist-info").is_dir():
        raise RuntimeError(f"pip did not install names {NAMES_VERSION} into {target}")
    return target / "names"


def read_names(names_dir: Path) -> tuple[list[str], dict[str, int]]:
    """Sorted distinct lowercase names from the Census files, and how many lines each file had."""
    lines_per_file = {}
    names: set[str] = set()
    for file_name in NAME_FILES:
        rows = (names_dir / file_name).read_text(encoding="ascii").splitlines()
        lines_per_file[file_name] = len(rows)
        for line_number, row in enumerate(rows, start=1):
            # Each row is "NAME  frequency  cumulative-frequency  rank"; only NAME is used.
            name = row.split()[0].lower()
            if not set(name) <= set(string.ascii_lowercase):
                raise ValueError(f"{file_name}:{line_number}: name {name!r} is not plain a-z")
            names.add(name)
    return sorted(names), lines_per_file


def count_bigrams(names: list[str]) -> list[list[int]]:
    """27x27 counts: row = current symbol, column = next symbol, over BOUNDARY + name + BOUNDARY."""
    index = {symbol: i for i, symbol in enumerate(SYMBOLS)}
    counts = [[0] * len(SYMBOLS) for _ in SYMBOLS]
    for name in names:
        framed = BOUNDARY + name + BOUNDARY
        for current, following in itertools.pairwise(framed):
            counts[index[current]][index[following]] += 1
    return counts


def counts_to_csv(counts: list[list[int]]) -> str:
    """CSV text: header `,·,a,...,z`, then one row per current symbol."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", *SYMBOLS])
    for symbol, row in zip(SYMBOLS, counts):
        writer.writerow([symbol, *row])
    return buffer.getvalue()


def provenance_text(
    *, names: list[str], lines_per_file: dict[str, int], counts: list[list[int]], sha256: str
) -> str:
    """Markdown provenance note for the CSV."""
    total_lines = sum(lines_per_file.values())
    per_file = "\n".join(f"  - `{name}`: {lines} names" for name, lines in lines_per_file.items())
    return f"""# Census first-name bigram counts: provenance

`names_bigram_counts.csv` holds the character bigram counts behind `lessonlib.bigram`.

- Source: the data files of the PyPI package `names` version {NAMES_VERSION}
  (Trey Hunner, MIT licence for the code), read from an installed copy:
{per_file}
- Origin of those files: the 1990 US Census first-name frequency lists published by the
  US Census Bureau; the `names` package states that these data files are public domain.
- Names read: {total_lines} lines in all; {len(names)} distinct names after lowercasing
  (a name on both lists counts once).
- Counting rule: each distinct name is framed as `·name·` (`·` is U+00B7, the start and end
  marker) and every adjacent pair of symbols is counted once. Counts are unweighted: the
  lists' frequency columns are ignored, so a rare name weighs as much as a common one.
  Total bigrams: {sum(map(sum, counts))}.
- Layout: header row `,·,a,b,...,z`; 27 rows; row = current symbol, column = next symbol.
- Built: {datetime.date.today().isoformat()} by `data/build_names_bigram.py` (rerun it from the
  repository root to rebuild both this note and the CSV).
- sha256 of names_bigram_counts.csv: {sha256}
"""


def main() -> None:
    """Build the CSV and its provenance note."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--names-dir",
        type=Path,
        help="folder of an installed `names` 0.3.0 package (default: install one temporarily)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        names_dir = args.names_dir or install_names_package(Path(tmp))
        names, lines_per_file = read_names(names_dir)
    counts = count_bigrams(names)
    csv_text = counts_to_csv(counts)
    CSV_PATH.write_text(csv_text, encoding="utf-8", newline="")
    sha256 = hashlib.sha256(CSV_PATH.read_bytes()).hexdigest()
    PROVENANCE_PATH.write_text(
        provenance_text(names=names, lines_per_file=lines_per_file, counts=counts, sha256=sha256),
        encoding="utf-8",
    )
    print(f"{len(names)} distinct names from {sum(lines_per_file.values())} lines")
    print(f"wrote {CSV_PATH.name} (sha256 {sha256}) and {PROVENANCE_PATH.name}")


if __name__ == "__main__":
    main()
