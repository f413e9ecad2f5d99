"""A private JupyterLab server and a notebook page in Chromium, for the browser tests.

`LabServer` starts JupyterLab on loopback with a random port and token, in a scratch
configuration that keeps it offline, quiet and unable to save files (so running a notebook
can never rewrite the committed outputs), and stops it together with every kernel it started.
`NotebookPage` drives one notebook through the JupyterLab UI (the Run menu, like a learner) and
reads its state through the application object that `expose_app_in_browser` puts on `window`:
the DOM does not tell an error output from a stderr stream (both are rendered with the
mime type application/vnd.jupyter.stderr), the notebook model does.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Flags verified on the CI machine (see /work/shared/TOOLING.md): no sandbox (root in a
# container), no GPU, and nothing that calls home.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 1000}

SERVER_START_TIMEOUT = 60.0  # seconds until /api/status answers (about 4 s on the CI machine)
KERNEL_READY_TIMEOUT = 90.0  # seconds from page load to a connected, idle kernel
RUN_ALL_TIMEOUT = 240.0  # seconds for one notebook's "Run All Cells"
RENDER_TIMEOUT = 30.0  # seconds for widgets and ipympl canvases to appear after the run
POLL = 0.25  # seconds between two looks at the page

# JupyterLab user settings for the scratch settings folder. Autosave off: a notebook that runs
# longer than the autosave interval would otherwise be written back to the repository.
# windowingMode "none": every cell is attached to the DOM, so checks and screenshots see all.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

# Server configuration: refuse every save with an HTTP error (a plain exception would only be
# logged, and the file written anyway).
SERVER_CONFIG = '''
from tornado.web import HTTPError


def refuse_save(model, path, contents_manager, **kwargs):
    """The browser tests never write files: refuse the save."""
    raise HTTPError(403, f"the browser tests never save files (tried to save {path})")


c.ContentsManager.pre_save_hook = refuse_save
'''


def chromium_executable() -> Path:
    """The Chromium the tests drive: $CHROMIUM if set, else Debian's /usr/bin/chromium."""
    return Path(os.environ.get("CHROMIUM") or DEFAULT_CHROMIUM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_scratch_config(scratch: Path) -> dict[str, Path]:
    """Write the settings and server configuration under `scratch`; return the folders."""
    folders = {
        name: scratch / name
        for name in ("settings", "workspaces", "config", "data", "runtime", "ipython")
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for plugin, values in LAB_SETTINGS.items():
        path = folders["settings"] / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    (folders["config"] / "jupyter_server_config.py").write_text(SERVER_CONFIG, encoding="utf-8")
    return folders


class PortTaken(RuntimeError):
    """JupyterLab could not bind its port."""


@dataclass
class LabServer:
    """A JupyterLab server process on loopback, with the kernels it started."""

    process: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    token: str
    log_path: Path
    kernels: set[str] = field(default_factory=set)  # ids of the kernels the tests opened

    @classmethod
    def start(cls, root: Path, scratch: Path, attempts: int = 3) -> LabServer:
        """Start JupyterLab serving `root`, with its configuration and log under `scratch`."""
        for attempt in range(1, attempts + 1):
            try:
                return cls._start_once(root, scratch)
            except PortTaken:
                # Another process took the free port between free_port() and the bind.
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(cls, root: Path, scratch: Path) -> LabServer:
        folders = write_scratch_config(scratch)
        port, token = free_port(), secrets.token_hex(24)
        jupyter = Path(sys.executable).with_name("jupyter")
        command = [
            str(jupyter),
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--port-retries=0",  # a taken port is an error, not a silent move elsewhere
            f"--ServerApp.token={token}",
            "--allow-root",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",  # no PyPI queries
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, read by NotebookPage
            f"--LabApp.user_settings_dir={folders['settings']}",
            f"--LabApp.workspaces_dir={folders['workspaces']}",
            "--LanguageServerManager.autodetect=False",
        ]
        env = {
            **os.environ,
            # A private configuration: the learner's own Jupyter config, data and IPython
            # profile (startup files) must not change what the test sees.
            "JUPYTER_CONFIG_DIR": str(folders["config"]),
            "JUPYTER_DATA_DIR": str(folders["data"]),
            "JUPYTER_RUNTIME_DIR": str(folders["runtime"]),
            "IPYTHONDIR": str(folders["ipython"]),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        log_path = scratch / "jupyterlab.log"
        with log_path.open("w", encoding="utf-8") as log:
            # A new session, so that stop() can end the server and its helpers as one group.
            process = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(
            process=process, url=f"http://127.0.0.1:{port}", token=token, log_path=log_path
        )
        try:
            server._wait_until_up()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "already in use" in self.log_tail():
                    raise PortTaken(self.url)
                raise RuntimeError(
                    f"JupyterLab exited with code {self.process.returncode} before answering; "
                    f"its log ends with:\n{self.log_tail()}"
                )
            try:
                status, _ = self.request("GET", "/api/status")
            except OSError:
                status = None
            if status == 200:
                return
            time.sleep(POLL)
        raise RuntimeError(
            f"JupyterLab did not answer /api/status within {SERVER_START_TIMEOUT:.0f} s; "
            f"its log ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method: str, path: str) -> tuple[int, Any]:
        """(HTTP status, decoded JSON or None) of a REST call authenticated with the token."""
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, None

    def kernel_ids(self) -> list[str]:
        """Ids of the kernels the server runs now."""
        status, kernels = self.request("GET", "/api/kernels")
        if status != 200:
            raise RuntimeError(f"GET /api/kernels answered {status}")
        return [kernel["id"] for kernel in kernels]

    def shutdown_kernel(self, kernel_id: str) -> None:
        """Shut one kernel down by its id; a kernel already gone is fine."""
        status, _ = self.request("DELETE", f"/api/kernels/{kernel_id}")
        if status not in (204, 404):
            raise RuntimeError(f"DELETE /api/kernels/{kernel_id} answered {status}")

    def stop(self) -> list[str]:
        """Shut down every kernel by id, then the server; return what had to be killed."""
        notes = []
        if self.process.poll() is None:
            try:
                # Every kernel of this private server was started by the tests.
                for kernel_id in self.kernel_ids():
                    notes.append(f"kernel {kernel_id} was still running at the end: shut down")
                    self.shutdown_kernel(kernel_id)
            except (OSError, RuntimeError) as error:
                notes.append(f"kernel shutdown through the REST API failed: {error}")
        # Kernels run in sessions of their own, outside the server's process group: note their
        # pids now, to end any that outlive the server.
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                notes.append(f"JupyterLab ignored {sig.name} for {wait} s")
        for child in children:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                notes.append(f"killed leftover process {child.pid} ({' '.join(child.cmdline())})")
                child.kill()
        return notes


# Reads the state of the notebook at `path` from the notebook model (not the DOM): per code
# cell its execution count, whether it is queued or running, its tags, its error outputs, and
# how many widget views it displays; plus the kernel's status and id.
SNAPSHOT_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app) return {found: false, why: 'window.jupyterapp is missing'};
  const panel = [...app.shell.widgets('main')].find(w => w.context && w.context.path === path);
  if (!panel || !panel.content.model) return {found: false, why: 'no open notebook ' + path};
  const kernel = panel.sessionContext.session ? panel.sessionContext.session.kernel : null;
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    if (cell.type !== 'code') continue;
    const errors = [];
    const stderr = [];
    let widgetViews = 0;
    for (let j = 0; j < cell.outputs.length; j++) {
      const output = cell.outputs.get(j).toJSON();
      if (output.output_type === 'error') errors.push(output.ename + ': ' + output.evalue);
      if (output.output_type === 'stream' && output.name === 'stderr') {
        stderr.push([].concat(output.text).join('').slice(0, 200));
      }
      if (output.data && output.data['application/vnd.jupyter.widget-view+json']) widgetViews++;
    }
    const stdout = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const output = cell.outputs.get(j).toJSON();
      if (output.output_type === 'stream' && output.name === 'stdout') {
        stdout.push([].concat(output.text).join('').slice(0, 300));
      }
    }
    const view = panel.content.widgets[i];
    cells.push({
      index: i,
      stdout: stdout.join(''),
      inputHidden: view ? view.inputHidden : null,
      count: cell.executionCount,
      running: cell.executionState === 'running',
      empty: cell.sharedModel.getSource().trim() === '',
      tags: cell.getMetadata('tags') || [],
      errors: errors,
      stderr: stderr,
      widgetViews: widgetViews,
    });
  }
  return {
    found: true,
    kernel: kernel ? {id: kernel.id, status: kernel.status, connection: kernel.connectionStatus}
                   : null,
    dialog: document.querySelector('.jp-Dialog') ? document.querySelector('.jp-Dialog').innerText
                                                 : null,
    cells: cells,
  };
}
"""

# What a learner sees that the model does not record: tracebacks printed into Output widgets
# by widget callbacks, "Error displaying widget", rendered widget views, drawn ipympl
# canvases and loaded images, per cell (index in the notebook).
DOM_JS = """
(path) => {
  const app = window.jupyterapp;
  const panel = [...app.shell.widgets('main')].find(w => w.context && w.context.path === path);
  const cellIndex = node => {
    const cell = node.closest('.jp-Cell');
    return panel.content.widgets.findIndex(w => w.node === cell);
  };
  const tracebacks = [];
  for (const output of panel.node.querySelectorAll('.jp-OutputArea-output')) {
    // The innermost output only: an Output widget nests output areas inside a cell's output.
    if (output.querySelector('.jp-OutputArea-output')) continue;
    const text = output.innerText || '';
    if (text.includes('Traceback (most recent call last)')) {
      tracebacks.push({index: cellIndex(output), text: text.slice(-400)});
    }
  }
  const widgetErrors = [];
  for (const node of panel.node.querySelectorAll('.jp-OutputArea-output')) {
    if (node.querySelector('.jp-OutputArea-output')) continue;  // innermost only, as above
    if ((node.innerText || '').includes('Error displaying widget')) {
      widgetErrors.push({index: cellIndex(node), text: node.innerText.slice(0, 300)});
    }
  }
  // Widget views shown as cell outputs (not the ones nested inside an Output widget).
  let renderedViews = 0;
  for (const node of panel.node.querySelectorAll('.jp-OutputArea-output')) {
    if (node.closest('.widget-output')) continue;
    if (node.firstElementChild && node.firstElementChild.classList.contains('jupyter-widgets')) {
      renderedViews++;
    }
  }
  const canvases = [];
  for (const div of panel.node.querySelectorAll('.jupyter-matplotlib-canvas-div')) {
    const canvas = div.querySelector('canvas');  // the figure; the second is the rubber band
    let distinct = 0;
    if (canvas && canvas.width > 0 && canvas.height > 0) {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      const seen = new Set();
      const words = new Uint32Array(data.buffer);
      for (let k = 0; k < words.length && seen.size < 3; k += 7) seen.add(words[k]);
      distinct = seen.size;
    }
    canvases.push({index: cellIndex(div), width: canvas ? canvas.width : 0, distinct: distinct});
  }
  const images = [];
  for (const img of panel.node.querySelectorAll('.jp-OutputArea-output img')) {
    images.push({index: cellIndex(img), loaded: img.complete && img.naturalWidth > 0});
  }
  const sliders = panel.node.querySelectorAll('.jp-OutputArea-output .widget-slider').length;
  const sliderHandles = panel.node.querySelectorAll(
    '.jp-OutputArea-output .widget-slider .noUi-handle').length;
  const buttons = panel.node.querySelectorAll('.jp-OutputArea-output .widget-button').length;
  // Folded hints (<details> in Markdown): rendered as such, and closed until clicked.
  const details = panel.node.querySelectorAll('.jp-MarkdownOutput details').length;
  const openDetails = panel.node.querySelectorAll('.jp-MarkdownOutput details[open]').length;
  return {tracebacks, widgetErrors, renderedViews, canvases, images, sliders, sliderHandles,
          buttons, details, openDetails};
}
"""


def _cell(index: int) -> str:
    return f"cell {index + 1}"


class NotebookPage:
    """One notebook opened in its own browser page, driven as a learner would."""

    def __init__(self, page: Any, server: LabServer, path: str) -> None:
        self.page = page
        self.server = server
        self.path = path  # relative to the server's root, e.g. notebooks/02_temperature.ipynb
        self.kernel_id: str | None = None
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text[:300]) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.page_errors.append(str(error)[:300]))

    # ----- state -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The notebook model's state (see SNAPSHOT_JS)."""
        return self.page.evaluate(SNAPSHOT_JS, self.path)

    def dom(self) -> dict[str, Any]:
        """What the page shows (see DOM_JS)."""
        return self.page.evaluate(DOM_JS, self.path)

    def wait_for(self, done: Any, timeout: float, what: str) -> Any:
        """Poll `done()` until it returns a true value twice in a row; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        previous = None
        while True:
            value = done()
            if value and previous:
                return value
            previous = value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path}: {what} within {timeout:.0f} s")
            time.sleep(POLL)

    # ----- steps -----------------------------------------------------------------------------

    def open(self) -> None:
        """Load JupyterLab with only this notebook open, and wait for an idle kernel."""
        self.page.goto(f"{self.server.url}/lab/tree/{self.path}?token={self.server.token}&reset")

        def ready() -> dict[str, Any] | None:
            state = self.snapshot()
            if state.get("dialog"):
                raise AssertionError(f"{self.path}: a dialog opened: {state['dialog']!r}")
            kernel = state.get("kernel") if state.get("found") else None
            if kernel and kernel["connection"] == "connected" and kernel["status"] == "idle":
                return state
            return None

        state = self.wait_for(ready, KERNEL_READY_TIMEOUT, "no connected, idle kernel")
        self.kernel_id = state["kernel"]["id"]
        self.server.kernels.add(self.kernel_id)
        # More room for the outputs in screenshots; the file browser is not under test.
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")

    def menu(self, menu: str, item: str) -> None:
        """Click `item` in the menu bar's `menu`, both matched by their exact labels."""
        self.page.locator(".lm-MenuBar-itemLabel").get_by_text(menu, exact=True).click()
        self.page.get_by_role("menuitem", name=item, exact=True).click()

    def run_all(self) -> dict[str, Any]:
        """Clear the saved outputs, Run All Cells, and wait until nothing is queued or running."""
        # Notebooks are committed executed: without clearing, the saved execution counts and
        # outputs would pass for fresh ones.
        self.menu("Edit", "Clear Outputs of All Cells")
        self.wait_for(
            lambda: all(cell["count"] is None for cell in self.snapshot()["cells"]),
            RENDER_TIMEOUT,
            "Clear Outputs of All Cells left execution counts",
        )
        self.menu("Run", "Run All Cells")

        def finished() -> dict[str, Any] | None:
            state = self.snapshot()
            cells = state["cells"]
            if state["kernel"] is None or state["kernel"]["status"] != "idle":
                return None
            if any(cell["running"] for cell in cells):
                return None
            started = any(cell["count"] is not None for cell in cells)
            complete = all(cell["count"] is not None for cell in cells if not cell["empty"])
            failed = any(cell["errors"] for cell in cells)
            return state if started and (complete or failed) else None

        return self.wait_for(finished, RUN_ALL_TIMEOUT, "Run All Cells did not finish")

    def stderr(self) -> list[str]:
        """What the cells printed to stderr (warnings, say): not errors, but worth a look."""
        return [
            f"{_cell(cell['index'])}: {text.strip()}"
            for cell in self.snapshot()["cells"]
            for text in cell["stderr"]
        ]

    def wait_until_idle(self) -> None:
        """Wait until the kernel has handled every message (the widgets' ones included)."""

        def idle() -> bool:
            kernel = self.snapshot()["kernel"]
            return kernel is not None and kernel["status"] == "idle"

        self.wait_for(idle, RUN_ALL_TIMEOUT, "the kernel stayed busy")

    def wait_for_rendering(self) -> dict[str, Any]:
        """Wait until every widget view is rendered and every ipympl canvas has drawn pixels."""
        expected = sum(cell["widgetViews"] for cell in self.snapshot()["cells"])

        def rendered() -> dict[str, Any] | None:
            dom = self.dom()
            if dom["widgetErrors"]:
                return dom  # nothing more will render; problems() reports it
            if dom["renderedViews"] < expected:
                return None
            if any(canvas["distinct"] < 2 for canvas in dom["canvases"]):
                return None
            if not all(image["loaded"] for image in dom["images"]):
                return None
            return dom

        try:
            return self.wait_for(rendered, RENDER_TIMEOUT, "widgets did not render")
        except AssertionError as error:
            dom = self.dom()
            blank = [_cell(c["index"]) for c in dom["canvases"] if c["distinct"] < 2]
            broken = [_cell(i["index"]) for i in dom["images"] if not i["loaded"]]
            raise AssertionError(
                f"{error}: {dom['renderedViews']} of {expected} widget views rendered; "
                f"blank ipympl canvases in {blank}; images not loaded in {broken}"
            ) from None

    def problems(self, *, require_all_executed: bool = True) -> list[str]:
        """Everything a learner would see as broken; empty when the notebook is fine."""
        state, dom = self.snapshot(), self.dom()
        allowed = {c["index"] for c in state["cells"] if "raises-exception" in c["tags"]}
        found = []
        for cell in state["cells"]:
            if cell["errors"] and cell["index"] not in allowed:
                found.append(f"{_cell(cell['index'])} raised {'; '.join(cell['errors'])}")
            if require_all_executed and cell["count"] is None and not cell["empty"]:
                found.append(f"{_cell(cell['index'])} has no execution count (never ran)")
        for traceback in dom["tracebacks"]:
            if traceback["index"] not in allowed:
                found.append(
                    f"{_cell(traceback['index'])} shows a traceback: ...{traceback['text']}"
                )
        for error in dom["widgetErrors"]:
            found.append(f"{_cell(error['index'])} shows {error['text']!r}")
        found.extend(f"uncaught error in the page: {error}" for error in self.page_errors)
        return found

    def screenshots(self, folder: Path, name: str) -> list[Path]:
        """Screenshots of the whole notebook, top to bottom, as NAME-01.png, NAME-02.png, ..."""
        folder.mkdir(parents=True, exist_ok=True)
        scroller = self.page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first
        box = scroller.bounding_box()
        paths = []
        top, height = 0, None
        while len(paths) < 40:  # a bound, in case the notebook keeps growing while scrolled
            # The end is the last cell's bottom edge: below it lies only the scroll-past-end pad.
            scroll = scroller.evaluate(
                """(node, top) => {
                  node.scrollTop = top;
                  const cells = node.querySelectorAll('.jp-Cell');
                  const last = cells[cells.length - 1].getBoundingClientRect().bottom;
                  const end = last - node.getBoundingClientRect().top + node.scrollTop;
                  return [node.scrollTop, node.clientHeight, end];
                }""",
                top,
            )
            current, height, total = scroll
            time.sleep(0.2)  # let the scroll settle before the shot
            path = folder / f"{name}-{len(paths) + 1:02d}.png"
            self.page.screenshot(path=str(path), clip=box)
            paths.append(path)
            if current + height >= total:
                break
            top = current + height
        scroller.evaluate("node => { node.scrollTop = 0; }")
        return paths

    def close(self) -> None:
        """Shut this notebook's kernel down by its id, then close the page without saving."""
        try:
            if self.kernel_id is not None:
                self.server.shutdown_kernel(self.kernel_id)
        finally:
            # No beforeunload prompt: closing the page discards the unsaved outputs.
            self.page.close(run_before_unload=False)
