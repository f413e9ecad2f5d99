"""Course speed and memory: every notebook run top to bottom from a fresh kernel.

Each notebook in notebooks/ is read into memory and executed by nbclient in its own new
kernel, with notebooks/ as the working directory as in JupyterLab; nothing is written back.
Per notebook the script prints the kernel's start-up time, the time to run all cells, their
sum, the slowest cell, and the kernel's peak memory; then the totals and the course's targets:
- the whole course (start-up and cells of every notebook) under 360 s;
- no notebook (start-up and cells) over 120 s;
- no kernel over 800 MB of resident memory (MB here are 10^6 bytes, the stricter reading).

Peak memory is the larger of two measures, both taken while the notebook's own kernel runs:
- a background thread samples, every 20 ms with psutil, the resident memory (RSS) of the
  kernel process plus all its child processes, in case a notebook starts any;
- the kernel's own high-water mark (VmHWM in /proc/PID/status on Linux), read after the last
  cell, catches a spike between two samples.
This is what a memory-limited container (Binder) counts, per kernel. It is preferred to
`/usr/bin/time -v` around a subprocess, whose maximum RSS is that of the largest single
process in the tree, would also cover the nbclient driver, and needs GNU time installed.

Before the notebooks, the cost of importing what a lesson needs, each in a fresh interpreter
(seconds and peak resident memory): torch alone, the course without Hugging Face
(`lessonlib.generation`, `lessonlib.widgets.pipeline`), and lesson 11's additions
(`transformers`, through `lessonlib.hf`); the ratio to torch alone is printed beside each.

Exit status: 0 whether or not the targets hold, unless --check is given (then 1 if one fails);
always 1 if a cell raises or the run changed a file under notebooks/.
Run from the repository root: .venv/bin/python benchmarks/course.py [--check] [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The lessons draw hundreds of stories per compared setting, so that each conclusion has a
# standard error (02: 400, 03: 512 twins, 04: 512): evidence costs about a minute in the
# slowest lessons, each of which says so above its progress bar. Binder gives 1-2 GB per
# session, the JupyterLab server included.
COURSE_SECONDS = 360.0
NOTEBOOK_SECONDS = 120.0
KERNEL_MB = 800.0
MB = 1e6


@dataclass(frozen=True)
class NotebookRun:
    """What one notebook cost: seconds to start its kernel and to run its cells, peak bytes."""

    name: str
    start_s: float
    run_s: float
    # Per cell: seconds, and the sampled peak memory of the kernel so far in bytes.
    cells: tuple[tuple[float, int], ...]
    peak_bytes: int
    error: str | None = None

    @property
    def total_s(self) -> float:
        """Kernel start-up plus all cells: what a learner waits for after opening it."""
        return self.start_s + self.run_s

    @property
    def slowest_cell(self) -> int:
        """Index of the slowest cell (0 for a notebook without cells)."""
        return max(range(len(self.cells)), key=lambda index: self.cells[index][0], default=0)


class PeakMemory:
    """Samples the RSS of a process and its children in a background thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                total = 0
                for process in tree:
                    try:
                        total += process.memory_info().rss
                    except psutil.NoSuchProcess:  # a child that ended between the two calls
                        pass
            except psutil.NoSuchProcess:  # the kernel itself is gone
                return
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def high_water_mark(pid: int) -> int:
    """The process's peak RSS in bytes as the Linux kernel tracks it (VmHWM), or 0 elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return 0


def run_notebook(path: Path, cell_timeout: int) -> NotebookRun:
    """Execute an in-memory copy of the notebook at `path` in a fresh kernel and measure it."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        resources={"metadata": {"path": str(path.parent)}},
    )
    cells = []
    error = None
    # The kernel's stderr goes to a scratch file (not under notebooks/): shown only on error,
    # so that its start-up warnings do not break up the table.
    with tempfile.TemporaryFile() as kernel_log:
        started = time.perf_counter()
        with client.setup_kernel(stderr=kernel_log):
            ready = time.perf_counter()
            pid = client.km.provisioner.pid
            with PeakMemory(pid) as sampler:
                for index, cell in enumerate(notebook.cells):
                    cell_start = time.perf_counter()
                    try:
                        client.execute_cell(cell, index)
                    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                        error = f"cell {index}: {str(exc).strip().splitlines()[-1]}"
                    cells.append((time.perf_counter() - cell_start, sampler.peak_bytes))
                    if error:
                        break
                finished = time.perf_counter()
                hwm = high_water_mark(pid)
        if error:
            kernel_log.seek(0)
            print(kernel_log.read().decode(errors="replace")[-2000:], file=sys.stderr)
    return NotebookRun(
        name=path.name,
        start_s=ready - started,
        run_s=finished - ready,
        cells=tuple(cells),
        peak_bytes=max(sampler.peak_bytes, hwm),
        error=error,
    )


def print_cells(run: NotebookRun, notebook: Path) -> None:
    """One line per cell: seconds, sampled peak so far, and the cell's first line."""
    sources = [cell.source for cell in nbformat.read(notebook, as_version=4).cells]
    for index, (seconds, peak) in enumerate(run.cells):
        first_line = (sources[index].strip().splitlines() or [""])[0][:60]
        print(f"    cell {index:3d} {seconds:7.2f} s {peak / MB:6.0f} MB  {first_line}")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under `folder`, by relative path."""
    return {
        str(file.relative_to(folder)): (file.stat().st_size, file.stat().st_mtime_ns)
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    }


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


IMPORTS = {
    "torch": "import torch",
    "course without Hugging Face": "import lessonlib.generation, lessonlib.widgets.pipeline",
    "lesson 11 (+ transformers)": (
        "import lessonlib.generation, lessonlib.widgets.pipeline, lessonlib.hf, transformers;"
        " from transformers import AutoModelForCausalLM"
    ),
}
# Run in a fresh interpreter: the import's wall time and the process's peak RSS in bytes.
_IMPORT_PROBE = (
    "import resource, time; t = time.perf_counter(); {statement}; "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
)


def import_costs(repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Median seconds and peak bytes of each import in IMPORTS, each in a fresh interpreter."""
    costs = {}
    for name, statement in IMPORTS.items():
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", _IMPORT_PROBE.format(statement=statement)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            runs.append((float(out[0]), float(out[1])))
        runs.sort()
        costs[name] = runs[len(runs) // 2]
    return costs


def print_import_costs() -> None:
    """One row per import: seconds and peak MB, and each as a ratio to torch alone."""
    costs = import_costs()
    base_s, base_bytes = costs["torch"]
    print(
        f"{'import (fresh interpreter)':30} {'s':>6} {'x torch':>8} {'peak MB':>8} {'x torch':>8}"
    )
    for name, (seconds, peak) in costs.items():
        print(
            f"{name:30} {seconds:6.2f} {seconds / base_s:8.2f} {peak / MB:8.0f} "
            f"{peak / base_bytes:8.2f}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--cells", action="store_true", help="also print every cell's time")
    args = parser.parse_args()
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        paths = [path for path in paths if path.name in args.names]
        missing = set(args.names) - {path.name for path in paths}
        if missing:
            sys.exit(f"no such notebook in {NOTEBOOKS}: {', '.join(sorted(missing))}")

    print_import_costs()
    print(f"{len(paths)} notebooks, each in a fresh kernel ({sys.executable})")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = f"{'notebook':28} {'start s':>8} {'cells s':>8} {'total s':>8} {'slowest cell':>14}"
    print(f"{header} {'peak MB':>8}")
    before = snapshot(NOTEBOOKS)
    runs = []
    for path in paths:
        run = run_notebook(path, args.cell_timeout)
        runs.append(run)
        slowest = run.cells[run.slowest_cell][0] if run.cells else 0.0
        row = (
            f"{run.name:28} {run.start_s:8.2f} {run.run_s:8.2f} {run.total_s:8.2f} "
            f"{f'{slowest:.2f} (#{run.slowest_cell})':>14} {run.peak_bytes / MB:8.0f}"
        )
        print(row + (f"  ERROR {run.error}" if run.error else ""), flush=True)
        if args.cells:
            print_cells(run, path)
    changed = sorted(set(before.items()) ^ set(snapshot(NOTEBOOKS).items()))
    course_s = sum(run.total_s for run in runs)
    slowest_run = max(runs, key=lambda run: run.total_s)
    biggest_run = max(runs, key=lambda run: run.peak_bytes)
    print(
        f"{'total':28} {sum(r.start_s for r in runs):8.2f} {sum(r.run_s for r in runs):8.2f} "
        f"{course_s:8.2f}"
    )
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    targets = [
        (f"whole course {course_s:.1f} s < {COURSE_SECONDS:.0f} s", course_s < COURSE_SECONDS),
        (
            (
                f"slowest notebook {slowest_run.name} {slowest_run.total_s:.1f} s "
                f"<= {NOTEBOOK_SECONDS:.0f} s"
            ),
            slowest_run.total_s <= NOTEBOOK_SECONDS,
        ),
        (
            (
                f"largest kernel {biggest_run.name} {biggest_run.peak_bytes / MB:.0f} MB "
                f"<= {KERNEL_MB:.0f} MB"
            ),
            biggest_run.peak_bytes <= KERNEL_MB * MB,
        ),
    ]
    for text, ok in targets:
        print(f"{verdict(ok)}  {text}")
    errors = [run for run in runs if run.error]
    print(
        f"{verdict(not errors)}  every cell ran without an error ({len(errors)} notebooks failed)"
    )
    print(
        f"{verdict(not changed)}  notebooks/ unchanged by the run"
        + (f" (changed: {', '.join(sorted({name for name, _ in changed}))})" if changed else "")
    )
    if errors or changed or (args.check and not all(ok for _, ok in targets)):
        sys.exit(1)


if __name__ == "__main__":
    main()
