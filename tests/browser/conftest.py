"""Fixtures for the browser tests: one JupyterLab server and one Chromium for the session.

Both are stopped even when a test fails: the server's kernels are shut down by id through the
REST API, then the server's process group is ended. A missing Chromium is a failure, not a
skip: CI installs one, and a learner without one is told how to install it or how to run the
other checks (`make test BROWSER=0`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.jupyterlab import (
    CHROMIUM_FLAGS,
    VIEWPORT,
    LabServer,
    chromium_executable,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "screenshots"  # git-ignored

# Collected by the tests and printed after the run (see pytest_terminal_summary).
REPORT: dict[str, Any] = {"timings": [], "interactions": [], "notes": [], "load": []}

MISSING_BROWSER = """\
The browser tests drive JupyterLab in Chromium, and {path} does not exist.
  Install it:     sudo apt-get install chromium      (Debian and Ubuntu; CI does this)
  Or name one:    CHROMIUM=/path/to/chromium-or-chrome make test
  Or skip them:   make test BROWSER=0                (every other check still runs)
Never run `playwright install`: the tests use the system's Chromium."""


def pytest_configure(config: pytest.Config) -> None:
    REPORT["load"].append(("start", os.getloadavg()))


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Chromium executable; fails (not skips) the browser tests when it is missing."""
    path = chromium_executable()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(MISSING_BROWSER.format(path=path), pytrace=False)
    return path


@pytest.fixture(scope="session")
def lab_server(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 with a random port and token, serving the repository."""
    started = time.monotonic()
    server = LabServer.start(REPO_ROOT, tmp_path_factory.mktemp("jupyterlab"))
    REPORT["timings"].append(("JupyterLab server start", time.monotonic() - started))
    try:
        yield server
    finally:
        REPORT["notes"].extend(server.stop())


@pytest.fixture(scope="session")
def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile folder."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Python playwright is missing: `make setup` installs it from requirements.txt.",
            pytrace=False,
        )
    started = time.monotonic()
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(chromium),
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport=VIEWPORT,
        )
        REPORT["timings"].append(("Chromium start", time.monotonic() - started))
        try:
            context.set_default_timeout(30_000)
            yield context
        finally:
            context.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how long each notebook took, what the interactions did, and the machine's load."""
    if not REPORT["timings"]:
        return
    REPORT["load"].append(("end", os.getloadavg()))
    write = terminalreporter.write_line
    terminalreporter.section("browser tests")
    for name, seconds in REPORT["timings"]:
        write(f"{seconds:7.1f} s  {name}")
    for line in REPORT["interactions"]:
        write(f"  {line}")
    for note in REPORT["notes"]:
        write(f"  note: {note}")
    for when, load in REPORT["load"]:
        write(f"load average at {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    write(f"screenshots in {SCREENSHOTS}")
