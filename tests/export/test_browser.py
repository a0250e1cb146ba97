"""End to end in a real browser: TensorBoard serves the demo's logdir, headless Chromium
opens the Projector, clicks our bookmark and must show our layout with every point.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped without it. The
browser is driven through the Chrome DevTools protocol with a small standard-library
websocket client, so no extra Python package is needed. Nothing is reached beyond
127.0.0.1: TensorBoard and Chromium are started here on free local ports and stopped
by their process ids.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentlens.export import read_projector

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is missing; install Debian's chromium package (apt-get install -y "
        f"chromium) to run the browser test",
    ),
]


# -- a minimal websocket client (RFC 6455), enough for the DevTools protocol --------------


class WebSocket:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        assert url.startswith("ws://")
        address, _, path = url[len("ws://") :].partition("/")
        host, _, port = address.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake closed")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class DevTools:
    """Send DevTools protocol commands to one page and wait for their responses."""

    def __init__(self, websocket_url: str) -> None:
        self.ws = WebSocket(websocket_url)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)  # fmt: skip


# JavaScript helpers injected into the page: find elements through shadow roots and
# same-origin iframes, and give their centre in top-level viewport coordinates.
PAGE_HELPERS = r"""
window.__ll = window.__ll || {
  find(selector, root = document, offset = {x: 0, y: 0}) {
    const hit = root.querySelector(selector);
    if (hit) return {el: hit, offset};
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) {
        const found = this.find(selector, el.shadowRoot, offset);
        if (found) return found;
      }
      if (el.tagName === 'IFRAME') {
        let doc = null;
        try { doc = el.contentDocument; } catch (e) { doc = null; }
        if (doc) {
          const r = el.getBoundingClientRect();
          const found = this.find(selector, doc,
              {x: offset.x + r.left + el.clientLeft, y: offset.y + r.top + el.clientTop});
          if (found) return found;
        }
      }
    }
    return null;
  },
  center(selector, host) {
    let found = null;
    if (host) {
      const h = this.find(host);
      found = h && h.el.shadowRoot ? this.find(selector, h.el.shadowRoot, h.offset) : null;
    } else {
      found = this.find(selector);
    }
    if (!found) return null;
    const r = found.el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return null;
    return {x: found.offset.x + r.left + r.width / 2, y: found.offset.y + r.top + r.height / 2};
  },
  projector() { const f = this.find('vz-projector'); return f ? f.el : null; },
};
true
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited early with code {process.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Stop a process this test started, by its own process group id."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def tensorboard_server(logdir: Path):
    """Run ``tensorboard`` on 127.0.0.1 and a free port over ``logdir``; yield its URL."""
    port = free_port()
    binary = Path(sys.executable).with_name("tensorboard")
    command = [str(binary), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
               "--load_fast=false", "--reload_interval=0"]  # fmt: skip
    log = open(logdir.parent / f"tensorboard_{logdir.name}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/data/plugin/projector/runs", 90, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium_profile")
    # The projector draws with WebGL. With --disable-gpu, Chromium 156 still falls back
    # to its software renderer (SwiftShader) by itself, but that automatic fallback is
    # deprecated, so the two SwiftShader flags ask for it explicitly.
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
        f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0", "--window-size=1400,900", "about:blank",
    ]  # fmt: skip
    log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.loads(answer.read()) if t["type"] == "page"]
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        yield devtools
        devtools.ws.close()
    finally:
        stop(process)
        log.close()


def screenshot(browser: DevTools) -> bytes:
    return base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])


def open_projector(browser: DevTools, url: str) -> dict:
    """Open TensorBoard's Projector tab and wait until its default tensor is loaded."""
    browser.call("Page.navigate", url=f"{url}/#projector")
    browser.wait_for("document.readyState === 'complete'", 60, "TensorBoard's page")
    loaded = (
        "(() => { const p = window.__ll && window.__ll.projector();"
        " if (!p || !p.dataSet) return null;"
        " const n = window.__ll.find('span.numDataPoints');"
        " return {shown: n ? n.el.innerText : null, points: p.dataSet.points.length,"
        " tensor: p.dataPanel.selectedTensor, run: p.dataPanel.selectedRun}; })()"
    )
    state = None
    for _ in range(240):
        browser.evaluate(PAGE_HELPERS)  # again each time: the page may have reloaded
        state = browser.evaluate(loaded)
        if state and state["shown"] and state["shown"] == str(state["points"]):
            return state
        time.sleep(0.5)
    raise AssertionError(f"the projector never showed its points: {state!r}")


def click_first_bookmark(browser: DevTools, tmp_path: Path) -> dict:
    """Click the first listed bookmark like a user; return what the projector then shows."""
    browser.wait_for(
        "(() => { const b = window.__ll.find('vz-projector-bookmark-panel');"
        " return b && b.el.savedStates && b.el.savedStates.length; })()",
        60, "the bookmark list",
    )  # fmt: skip
    # The tray opens by itself when the server lists bookmarks; open it if it did not.
    expand = browser.evaluate("window.__ll.center('#expand-more', 'vz-projector-bookmark-panel')")
    if expand:
        browser.click(expand["x"], expand["y"])

    # Under load the tray may still be moving, so the click is repeated (at fresh
    # coordinates) until the projector applies the bookmark.
    first_radio = (
        "window.__ll.center('div.state-row:first-of-type "
        "paper-icon-button[icon=\"radio-button-unchecked\"]', 'vz-projector-bookmark-panel')"
    )
    applied_state = (
        "(() => { const p = window.__ll.projector();"
        " const b = window.__ll.find('vz-projector-bookmark-panel').el;"
        " if (!b.savedStates[0].isSelected || !p.projection) return null;"
        " return {type: p.projection.projectionType,"
        " components: p.projection.projectionComponents,"
        " coords: p.dataSet.points.map(q => [0, 1, 2].map(k => q.projections['umap-' + k])),"
        " labels: p.dataSet.points.map(q => q.metadata.label),"
        " color: p.dataPanel.selectedColorOptionName}; })()"
    )
    for _ in range(6):
        radio = browser.wait_for(first_radio, 30, "the first bookmark's radio button")
        time.sleep(1.0)
        if browser.evaluate(first_radio) != radio:
            continue  # still moving
        browser.click(radio["x"], radio["y"])
        with contextlib.suppress(AssertionError):
            return browser.wait_for(applied_state, 15, "the bookmark to be applied")
    (tmp_path / "projector_failure.png").write_bytes(screenshot(browser))
    raise AssertionError(f"the bookmark was never applied; screenshot in {tmp_path}")


def save_screenshot(browser: DevTools, name: str, tmp_path: Path) -> np.ndarray:
    time.sleep(2)  # let the scatter plot draw the new layout
    shot = screenshot(browser)
    destination = Path(os.environ.get("LATENTLENS_SCREENSHOT_DIR", tmp_path))
    destination.mkdir(parents=True, exist_ok=True)
    (destination / name).write_bytes(shot)
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


def test_demo_bookmark_shows_every_point(browser, tmp_path_factory, tmp_path):
    from latentlens.demo import run_demo

    logdir = tmp_path_factory.mktemp("browser_demo")
    run = run_demo(logdir, epochs=1, seed=0).run
    served = read_projector(logdir, summaries=False)
    assert served["errors"] == []

    with tensorboard_server(logdir) as url:
        state = open_projector(browser, url)
        assert state["run"] == run
        entry = served["embeddings"][run][state["tensor"]]
        n_points = entry["shape"][0]
        assert state["shown"] == str(n_points)
        assert state["points"] == n_points
        expected_states = entry["bookmarks"]
        assert expected_states, "the demo wrote no bookmark for this tensor"

        applied = click_first_bookmark(browser, tmp_path)
        first = expected_states[0]
        assert applied["type"] == "umap"
        assert applied["components"] == ["umap-0", "umap-1", None]
        assert applied["color"] == first["selectedColorOptionName"]
        assert len(applied["coords"]) == n_points
        expected_xy = np.array([[p["umap-0"], p["umap-1"]] for p in first["projections"]])
        got_xy = np.array([xyz[:2] for xyz in applied["coords"]], float)
        np.testing.assert_allclose(got_xy, expected_xy, rtol=1e-6)

        picture = save_screenshot(browser, "projector_bookmark.png", tmp_path)
        assert picture.shape[0] > 400
        assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 20
        shown = browser.evaluate("window.__ll.find('span.numDataPoints').el.innerText")
        assert shown == str(n_points)


def test_hostile_labels_and_3d_layout_in_browser(browser, tmp_path_factory, tmp_path):
    from sklearn.datasets import load_digits

    from latentlens.export import ProjectorWriter

    digits = load_digits()
    n = 600
    hostile = ["tab\there", "line\nbreak", "cr\rhere", "", "   ", "nan", "ünï 漢字 🙂", "x" * 3000]
    labels = [hostile[i % len(hostile)] if i % 3 == 0 else str(digits.target[i]) for i in range(n)]
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(n, 3)) + digits.target[:n, None]
    logdir = tmp_path_factory.mktemp("browser_hostile")
    with ProjectorWriter(logdir, run="hostile") as writer:
        name = writer.add_embedding(
            digits.data[:n], layer="pixels", step=0, metadata={"label": labels},
            images=digits.images[:n] / 16.0, layout=layout,
        )  # fmt: skip
    entry = read_projector(logdir, summaries=False)["embeddings"]["hostile"][name]
    expected_labels = [row[0] for row in entry["metadata_rows"]]

    with tensorboard_server(logdir) as url:
        state = open_projector(browser, url)
        assert state["tensor"] == name
        assert state["shown"] == str(n)
        applied = click_first_bookmark(browser, tmp_path)
        assert applied["type"] == "umap"
        assert applied["components"] == ["umap-0", "umap-1", "umap-2"]
        assert len(applied["coords"]) == n
        np.testing.assert_allclose(np.array(applied["coords"], float),
                                   layout.astype(np.float32), rtol=1e-6)  # fmt: skip
        # Every point kept its own label: the front end parsed one row per point.
        assert [None if v is None else str(v) for v in applied["labels"]] == [
            label or None for label in expected_labels
        ]
        save_screenshot(browser, "projector_hostile_3d.png", tmp_path)
