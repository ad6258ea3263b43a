"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol.

The protocol runs over --remote-debugging-pipe (file descriptors 3 and 4, no
port, no network): the page is loaded from file://, console errors and
uncaught exceptions are collected, and the DOM is queried (checks table,
SVG charts) and exercised (sorting, filtering).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from meshbed.report import load_document, write_html

DATA = Path(__file__).parent / "data"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; .ci/run installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars"]


class Browser:
    """A minimal DevTools-protocol client over --remote-debugging-pipe (NUL-separated JSON)."""

    def __init__(self, user_data_dir: Path, timeout: float = 30.0) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # move the child's ends above 10 so dup2 onto 3 and 4 cannot clobber one another
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4, hi_r, hi_w), preexec_fn=child_fds)
        os.close(hi_r)
        os.close(hi_w)
        self.w, self.r = to_chrome_w, from_chrome_r
        self.timeout = timeout
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe: {self._stderr_tail()}")
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:] if self.proc.stderr else ""

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 2400, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')} "
                           f"{p.get('exceptionDetails', {}).get('exception', {}).get('description', '')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", session=False)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.w, self.r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    html = write_html(load_document(DATA / "conformance-rich.json"), tmp / "conformance.html")
    b = Browser(tmp / "profile")
    try:
        b.open(html.as_uri())
        yield b
    finally:
        b.close()


def test_no_console_errors(page):
    page.eval("new Promise(r => setTimeout(r, 200))")  # let anything deferred run
    assert page.problems() == []


def test_checks_table_and_banner(page):
    n = len(load_document(DATA / "conformance-rich.json")["checks"])
    assert page.eval("document.querySelectorAll('#checks-table tbody tr').length") == n
    assert page.eval("document.querySelector('.banner .verdict-word').textContent") == "FAIL"


def test_charts_are_drawn(page):
    svgs = page.eval("document.querySelectorAll('svg.chart').length")
    assert svgs >= 8
    # drawn, not just present: the charts have a laid-out size and lines with real geometry
    assert page.eval("Math.min(...[...document.querySelectorAll('svg.chart')].map(s => s.getBoundingClientRect().width))") > 100
    assert page.eval("[...document.querySelectorAll('svg.chart polyline')].filter(p => p.getBBox().width > 10).length") >= 4
    assert page.eval("document.querySelectorAll('#check-DISC-5 rect.fault').length") == 3


def test_filter_by_verdict_group_and_text(page):
    visible = "[...document.querySelectorAll('#checks-table tbody tr')].filter(r => !r.hidden).map(r => r.cells[0].textContent)"
    page.eval("(() => { const s = document.getElementById('f-verdict'); s.value = 'fail'; s.dispatchEvent(new Event('change')); })()")
    assert sorted(page.eval(visible)) == ["DISC-5", "TRACE-1"]
    page.eval("(() => { const s = document.getElementById('f-verdict'); s.value = ''; s.dispatchEvent(new Event('change'));"
              " const g = document.getElementById('f-group'); g.value = 'lb'; g.dispatchEvent(new Event('change')); })()")
    assert page.eval(visible) == ["LB-1"]
    page.eval("(() => { const g = document.getElementById('f-group'); g.value = ''; g.dispatchEvent(new Event('change'));"
              " const t = document.getElementById('f-text'); t.value = 'consul'; t.dispatchEvent(new Event('input')); })()")
    assert page.eval(visible) == ["DISC-3"]
    assert "1 of 6" in page.eval("document.getElementById('f-count').textContent")
    page.eval("(() => { const t = document.getElementById('f-text'); t.value = ''; t.dispatchEvent(new Event('input')); })()")
    assert len(page.eval(visible)) == 6


def test_sort_by_column(page):
    ids = "[...document.querySelectorAll('#checks-table tbody tr')].map(r => r.cells[0].textContent)"
    page.eval("document.querySelector('#checks-table th[data-col=\"6\"]').click()")  # verdict: fail, error, skipped, pass
    order = page.eval(ids)
    assert order[:2] == ["DISC-5", "TRACE-1"] and order[2] == "DISC-3"
    page.eval("document.querySelector('#checks-table th[data-col=\"5\"]').click()")  # time, ascending
    assert page.eval(ids)[-1] == "DISC-5"
    assert page.problems() == []


def test_diagnostics_collapsed_and_openable(page):
    assert page.eval("[...document.querySelectorAll('#check-DISC-5 details')].every(d => !d.open)")
    assert page.eval("(() => { const d = document.querySelector('#check-DISC-5 details'); d.open = true;"
                     " return d.querySelector('pre').getBoundingClientRect().height > 0; })()")


def test_screenshot(page, tmp_path):
    shot = page.send("Page.captureScreenshot", {"format": "png"})
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """The comparison page for two control planes whose verdicts differ on one check."""
    from meshbed.compare import build, render_html
    tmp = tmp_path_factory.mktemp("compare")
    a = json.loads((DATA / "conformance-rich.json").read_text())
    b = json.loads((DATA / "conformance-rich.json").read_text())
    b["checks"][0]["verdict"] = "fail" if a["checks"][0]["verdict"] != "fail" else "pass"
    a.setdefault("environment", {})["controlplane_usage"] = {"cpu_s": 12.5, "peak_rss_mb": 80.0}
    page_path = tmp / "comparison.html"
    page_path.write_text(render_html(build({"builtin": a, "go": b})))
    br = Browser(tmp / "profile")
    try:
        br.open(page_path.as_uri())
        yield br
    finally:
        br.close()


def test_comparison_matrix_reads_at_a_glance(comparison):
    assert comparison.problems() == []
    heads = comparison.eval("[...document.querySelectorAll('#matrix tr:first-child th')].map(t => t.textContent)")
    assert heads[-2:] == ["builtin", "go"]
    differing = comparison.eval("document.querySelectorAll('#matrix tr.differs').length")
    assert differing == 1
    # the differing row is highlighted: its header cell has a background other than white
    bg = comparison.eval("getComputedStyle(document.querySelector('#matrix tr.differs th')).backgroundColor")
    assert bg not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    shot = comparison.send("Page.captureScreenshot", {"format": "png"})
    assert base64.b64decode(shot["data"])[:8] == b"\x89PNG\r\n\x1a\n"
