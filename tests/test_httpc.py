"""meshbed.httpc and traffic.drive against real local servers (no mesh): pooled
keep-alive connections shared by threads, a timeout on every call, and typed
errors that tell a paused peer (Timeout) from a dead one (Refused / Reset)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from meshbed import httpc, traffic, wait
from meshbed.observe.discovery_helpers import EndpointPoller

# A keep-alive HTTP/1.1 server that counts the connections it accepted (GET /conns)
SERVER = r'''
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
conns = 0
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        global conns
        with lock:
            conns += 1
        super().setup()
    def _send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Meshbed-Instance", "local-1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/conns":
            return self._send(200, {"conns": conns})
        if self.path.startswith("/status/"):
            return self._send(int(self.path.rsplit("/", 1)[1]), {"status": "x"})
        if self.path.startswith("/clusters"):
            return self._send(200, {"cluster_statuses": [{"name": "backend", "host_statuses": []}]})
        self._send(200, {"path": self.path, "rid": self.headers.get("x-request-id", "")})
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        self._send(200, {"got": json.loads(raw or b"null"), "ctype": self.headers.get("Content-Type", "")})
    def log_message(self, *a):
        pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port)])
        wait.until(lambda: httpc.ok(self.url + "/conns", timeout=1), deadline=15, interval=0.05,
                   what="the local test server")

    def pause(self) -> None:
        """SIGSTOP, and wait until the kernel says it is stopped (the signal lands asynchronously)."""
        self.proc.send_signal(signal.SIGSTOP)

        def stopped() -> bool:
            with open(f"/proc/{self.proc.pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] == "T"
        wait.until(stopped, deadline=5, interval=0.01, what="the server to be stopped")

    def conns(self) -> int:
        return int(httpc.get_json(self.url + "/conns", timeout=5)["conns"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.stop()


def test_api_shape(server: Server) -> None:
    r = httpc.get(server.url + "/a?b=1", headers={"X-Request-Id": "r1"})
    assert r.status == 200 and r.json() == {"path": "/a?b=1", "rid": "r1"}
    assert r.headers["content-type"] == "application/json" and r.headers["x-meshbed-instance"] == "local-1"
    assert json.loads(r.text) == r.json() and isinstance(r.body, bytes)
    assert httpc.request("POST", server.url + "/p", {"k": [1, 2]}).json() == {"got": {"k": [1, 2]},
                                                                             "ctype": "application/json"}
    assert httpc.request("POST", server.url + "/p", b"[3]").json()["got"] == [3]
    assert httpc.get(server.url + "/status/503").status == 503  # an answer is not an error...
    with pytest.raises(httpc.StatusError) as ei:  # ...unless the caller needs 200
        httpc.get_json(server.url + "/status/404")
    assert ei.value.status == 404 and isinstance(ei.value, OSError)
    assert httpc.ok(server.url + "/") and not httpc.ok(server.url + "/status/500")


def test_connections_are_pooled_and_shared_by_threads(server: Server) -> None:
    before = server.conns()  # its own connection, reused by everything below
    for _ in range(50):
        assert httpc.get(server.url + "/x").status == 200
    assert server.conns() == before  # 50 sequential calls: no new connection

    def poll(_: int) -> int:
        return sum(httpc.get(server.url + "/y", timeout=5).status == 200 for _ in range(30))

    with ThreadPoolExecutor(10) as pool:
        assert sum(pool.map(poll, range(10))) == 300
    assert server.conns() - before <= 10  # at most one connection per thread, kept alive


def test_paused_is_timeout_dead_is_refused(server: Server) -> None:
    assert httpc.get(server.url + "/").status == 200
    server.pause()
    try:
        with pytest.raises(httpc.Timeout) as ei:
            httpc.get(server.url + "/", timeout=0.5)
        assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, OSError)
        assert "timed out" in str(ei.value) and ei.value.phase == "read"
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert httpc.get(server.url + "/").status == 200  # resumed: answers again
    server.stop()
    with pytest.raises(httpc.Refused) as er:
        httpc.get(server.url + "/", timeout=2)
    assert isinstance(er.value, ConnectionError) and not isinstance(er.value, httpc.Timeout)
    assert not httpc.ok(server.url + "/")


def test_reset_mid_request() -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]

    def slam() -> None:  # read the request, then close without answering
        conn, _ = lsock.accept()
        conn.recv(65536)
        conn.close()

    t = threading.Thread(target=slam, daemon=True)
    t.start()
    try:
        with pytest.raises(httpc.Reset) as ei:
            httpc.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert isinstance(ei.value, httpc.Refused)  # dead, for a poller: not a pause
    finally:
        t.join(5)
        lsock.close()


def test_bad_url_is_an_oserror() -> None:
    with pytest.raises(httpc.HttpError):
        httpc.get("http://127.0.0.1:99999999/")


def test_idle_pools_are_closed(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    before = server.conns()  # the server's pool now holds one idle keep-alive connection
    assert httpc.pool_count() >= 1
    monkeypatch.setattr(httpc, "IDLE_CLOSE_S", 0.0)
    monkeypatch.setattr(httpc, "SWEEP_EVERY_S", 0.0)
    other = Server()  # its readiness probe's call sweeps every idle pool, the server's too
    other.stop()
    assert server.conns() == before + 1  # so this call needed a new connection
    httpc.close_all()
    assert httpc.pool_count() == 0
    assert httpc.get(server.url + "/").status == 200  # a closed pool comes back on demand


def test_drive_counts_every_request_once_on_pooled_connections(server: Server) -> None:
    before = server.conns()
    batch = traffic.drive(server.url, 40, concurrency=4, path=lambda i: f"/p{i % 2}")
    assert batch.n == 40 and batch.ok == 40 and batch.by_status() == {200: 40}
    assert len({a.request_id for a in batch.answers}) == 40
    assert all(a.json()["rid"] == a.request_id and a.instance == "local-1" for a in batch.answers)
    assert {a.json()["path"] for a in batch.answers} == {"/p0", "/p1"}
    assert server.conns() - before <= 4
    server.stop()
    dead = traffic.drive(server.url, 3, concurrency=2, timeout=2)
    assert dead.n == 3 and dead.by_status() == {0: 3}
    assert all(a.error.startswith("Refused: ") for a in dead.answers)


def test_poller_records_paused_and_dead_apart(server: Server) -> None:
    with EndpointPoller({"e": server.url}, {"e": ("backend",)}, interval=0.02) as poller:
        wait.until(lambda: poller.polls["e"] >= 3, deadline=10, interval=0.02, what="three good polls")
        server.pause()
        try:  # a poll waits 1 s for a paused admin, then counts a timeout
            wait.until(lambda: poller.timeouts["e"] >= 1, deadline=10, interval=0.05, what="a timed-out poll")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()
        wait.until(lambda: poller.refused["e"] >= 2, deadline=10, interval=0.05, what="refused polls")
    assert poller.errors["e"] == poller.timeouts["e"] + poller.refused["e"]
    doc = poller.to_json()["e"]
    assert doc["timeouts"] >= 1 and doc["refused"] >= 2 and doc["polls"] >= 3
