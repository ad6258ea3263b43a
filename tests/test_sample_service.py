"""The sample service as real processes: two instances chained directly
(frontend's --sidecar points at backend), an in-test OTLP/JSON receiver, and
optionally a real Consul dev agent."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from meshbed import httpc, wait
from meshbed.provision import find_binary

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
_used: set[int] = set()


def free_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in _used:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


def request(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    r = httpc.request(method, url, body, headers, timeout=timeout)
    return r.status, r.headers, r.body


def get_json(url: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
    status, headers, raw = request(url, **kw)
    return status, headers, json.loads(raw)


def wait_until(probe: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """meshbed.wait.until with this file's defaults; the probe's truthy value."""
    return wait.until(probe, deadline=timeout, interval=0.05, what=what, fatal=(AssertionError,)).value


class Sample:
    """One `python -m meshbed.sample` subprocess, killed by pid at the end."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "meshbed.sample", "--listen", f"127.0.0.1:{self.port}", "--quiet", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})

    def wait_ready(self) -> "Sample":
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"sample exited {self.proc.returncode}: {self.proc.stderr.read()}")
            return request(self.base + "/healthz", timeout=1)[0] == 200
        wait_until(ready, what=f"{self.base}/healthz")
        return self

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class OtlpReceiver:
    """Collects OTLP/JSON span posts in memory."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    for rs in body["resourceSpans"]:
                        res = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
                        for ss in rs["scopeSpans"]:
                            for sp in ss["spans"]:
                                sp["resource"] = res
                                sp["attrs"] = {a["key"]: next(iter(a["value"].values())) for a in sp["attributes"]}
                                owner.spans.append(sp)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[Sample, Sample, OtlpReceiver]]:
    otlp = OtlpReceiver()
    env = {"MESHBED_OTLP_ENCODING": "json"}
    procs: list[Sample] = []
    try:
        backend = Sample("--service", "backend", "--instance", "backend-0", "--otlp", otlp.url, env=env)
        procs.append(backend)
        frontend = Sample("--service", "frontend", "--instance", "frontend-0", "--version", "v2",
                          "--downstream", "backend", "--sidecar", f"127.0.0.1:{backend.port}",
                          "--otlp", otlp.url, env=env)
        procs.append(frontend)
        backend.wait_ready()
        frontend.wait_ready()
        yield frontend, backend, otlp
    finally:
        for p in procs:
            p.stop()
        otlp.close()


def reset(*samples: Sample) -> None:
    for s in samples:
        assert request(s.base + "/meshbed/stats/reset", "POST")[0] == 200
        assert request(s.base + "/meshbed/fail", "POST", {"mode": "none"})[0] == 200
        assert request(s.base + "/meshbed/health", "POST", {"healthy": True})[0] == 200


def test_answer_shape_and_chain(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    frontend, backend, _ = mesh
    reset(frontend, backend)
    status, headers, body = get_json(frontend.base + "/orders/1?size=37",
                                     headers={"x-request-id": "rid-1", "x-meshbed-tag": "t"})
    assert status == 200
    assert headers["x-meshbed-instance"] == "frontend-0"
    assert body["service"] == "frontend" and body["instance"] == "frontend-0" and body["version"] == "v2"
    assert body["path"] == "/orders/1" and body["request_id"] == "rid-1"
    assert body["payload"] == ("0123456789abcdef" * 3)[:37]
    [down] = body["downstream"]
    assert down["service"] == "backend" and down["instance"] == "backend-0"
    assert down["request_id"] == "rid-1" and down["path"] == "/orders/1" and down["downstream"] == []
    assert len(body["trace_id"]) == 32 and down["trace_id"] == body["trace_id"]


def test_counters(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    frontend, backend, _ = mesh
    reset(frontend, backend)
    for _ in range(3):
        request(frontend.base + "/a")
    request(frontend.base + "/b?status=418")
    request(frontend.base + "/healthz")
    _, _, st = get_json(frontend.base + "/meshbed/stats")
    assert st["service"] == "frontend" and st["instance"] == "frontend-0"
    assert st["requests"] == 4 and st["by_path"] == {"/a": 3, "/b": 1}
    assert st["by_status"] == {"200": 3, "418": 1}
    assert st["in_flight"] == 0 and st["max_in_flight"] >= 1 and st["started_at"] > 0
    _, _, bst = get_json(backend.base + "/meshbed/stats")
    assert bst["requests"] == 4
    request(frontend.base + "/meshbed/stats/reset", "POST")
    _, _, st = get_json(frontend.base + "/meshbed/stats")
    assert st["requests"] == 0 and st["by_path"] == {} and st["max_in_flight"] == 0


def test_max_in_flight_with_delay(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    frontend, backend, _ = mesh
    reset(frontend, backend)
    threads = [threading.Thread(target=request, args=(backend.base + "/slow?delay_ms=300",)) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 0.3
    _, _, st = get_json(backend.base + "/meshbed/stats")
    assert st["max_in_flight"] == 4 and st["in_flight"] == 0


def test_health_flip(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    _, backend, _ = mesh
    assert request(backend.base + "/meshbed/health", "POST", {"healthy": False})[0] == 200
    status, _, body = get_json(backend.base + "/healthz")
    assert status == 503 and body == {"ok": False}
    assert request(backend.base + "/")[0] == 200  # app traffic is unaffected
    request(backend.base + "/meshbed/health", "POST", {"healthy": True})
    assert get_json(backend.base + "/healthz")[:3:2] == (200, {"ok": True})
    assert request(backend.base + "/meshbed/health", "POST", {"healthy": "no"})[0] == 400


def test_fail_5xx_ratio_and_downstream_error(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    frontend, backend, _ = mesh
    reset(frontend, backend)
    assert request(backend.base + "/meshbed/fail", "POST", {"mode": "5xx", "ratio": 0.5})[0] == 200
    statuses = [request(backend.base + "/x")[0] for _ in range(10)]
    assert statuses == [200, 503] * 5
    # through the frontend: the odd backend answer fails and the frontend says 502
    status, _, body = get_json(frontend.base + "/y")
    assert status == 200
    status, headers, body = get_json(frontend.base + "/y")
    assert status == 502 and headers["x-meshbed-instance"] == "frontend-0"
    [down] = body["downstream"]
    assert down["service"] == "backend" and down["status"] == 503 and down["error"]
    request(backend.base + "/meshbed/fail", "POST", {"mode": "none"})
    assert [request(backend.base + "/x")[0] for _ in range(4)] == [200] * 4
    _, _, st = get_json(backend.base + "/meshbed/stats")
    assert st["by_status"] == {"200": 10, "503": 6}


def test_fail_reset_aborts_connection(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    _, backend, _ = mesh
    reset(backend)
    request(backend.base + "/meshbed/fail", "POST", {"mode": "reset", "ratio": 1})
    with pytest.raises(httpc.Reset):  # the connection is closed on us: no answer, and not a timeout
        request(backend.base + "/z")
    request(backend.base + "/meshbed/fail", "POST", {"mode": "none"})
    _, _, st = get_json(backend.base + "/meshbed/stats")
    assert st["by_status"] == {"reset": 1}
    assert request(backend.base + "/meshbed/fail", "POST", {"mode": "boom"})[0] == 400


def test_bytes_endpoint(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    _, backend, _ = mesh
    reset(backend)
    for n in (0, 1, 100_003, 2 * 1024 * 1024 + 1):
        status, headers, raw = request(backend.base + f"/bytes/{n}")
        assert status == 200 and len(raw) == n
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-meshbed-sha256"] == hashlib.sha256(raw).hexdigest()
        assert raw == (b"0123456789abcdef" * (n // 16 + 1))[:n]


def test_bad_query_is_400(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    _, backend, _ = mesh
    assert request(backend.base + "/?size=abc")[0] == 400
    assert request(backend.base + "/?status=9999")[0] == 400
    assert request(backend.base + "/?status=504&only=frontend")[0] == 200  # targets another hop


def test_trace_propagation_and_export(mesh: tuple[Sample, Sample, OtlpReceiver]) -> None:
    frontend, backend, otlp = mesh
    reset(frontend, backend)
    tp = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    status, _, body = get_json(frontend.base + "/traced", headers={"traceparent": tp, "x-request-id": "rid-t"})
    assert status == 200
    assert body["trace_id"] == TRACE_ID and body["downstream"][0]["trace_id"] == TRACE_ID

    def spans() -> list[dict[str, Any]]:
        got = [s for s in otlp.spans if s["traceId"] == TRACE_ID]
        return got if len(got) >= 3 else []
    got = wait_until(spans, timeout=5, what="3 exported spans")
    fe_server = next(s for s in got if s["resource"]["service.name"] == "frontend" and s["kind"] == 2)
    fe_client = next(s for s in got if s["resource"]["service.name"] == "frontend" and s["kind"] == 3)
    be_server = next(s for s in got if s["resource"]["service.name"] == "backend" and s["kind"] == 2)
    assert fe_server["parentSpanId"] == "00f067aa0ba902b7"
    assert fe_client["parentSpanId"] == fe_server["spanId"]
    assert be_server["parentSpanId"] == fe_client["spanId"]
    assert fe_server["name"] == "GET /traced"
    assert fe_server["attrs"]["guid:x-request-id"] == "rid-t"
    assert be_server["attrs"]["guid:x-request-id"] == "rid-t"
    assert be_server["attrs"]["http.status_code"] == "200"
    assert be_server["attrs"]["meshbed.instance"] == "backend-0"
    assert fe_server["resource"]["service.instance.id"] == "frontend-0"
    assert fe_server["resource"]["meshbed.version"] == "v2"

    # an unsampled edge decision stays unsampled: same trace id, no spans exported
    unsampled = "5bf92f3577b34da6a3ce929d0e0e4736"
    _, _, body = get_json(frontend.base + "/quiet", headers={"traceparent": f"00-{unsampled}-00f067aa0ba902b7-00"})
    assert body["downstream"][0]["trace_id"] == unsampled
    # the positive marker first: a later sampled request's spans (3, from both processes) have arrived,
    # so any span of the unsampled one would have too (each process exports its spans in end order)
    _, _, after = get_json(frontend.base + "/after")
    wait_until(lambda: len([s for s in otlp.spans if s["traceId"] == after["trace_id"]]) >= 3, timeout=5,
               what="the spans of the sampled request after the unsampled one")
    assert not [s for s in otlp.spans if s["traceId"] == unsampled]


def test_sigterm_exits_zero() -> None:
    s = Sample("--service", "solo")
    try:
        s.wait_ready()
        assert s.stop() == 0
    finally:
        s.stop()


def test_listen_conflict_exits_nonzero() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "meshbed.sample", "--service", "x", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=20,
        )
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


# -- Consul -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def consul() -> Iterator[str]:
    binary = find_binary("consul")
    if binary.path is None:
        pytest.skip(f"no Consul binary ({binary.source}); `meshbed provision` builds it")
    http_port = free_port()
    cmd = [str(binary.path), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "t",
           "-http-port", str(http_port), "-dns-port", "-1", "-grpc-port", "-1",
           "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port()),
           "-server-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: request(base + "/v1/status/leader", timeout=1)[2].strip() not in (b"", b'""'),
                   timeout=20, what="Consul leader")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _agent_service(consul: str, sid: str) -> int:
    return request(f"{consul}/v1/agent/service/{sid}", timeout=2)[0]


def _reregistered_twice(consul: str, sid: str) -> None:
    """Remove ``sid`` behind its back twice, each time until its maintenance loop registers it again:
    the positive marker that more than one maintenance interval has passed, with loops running."""
    for i in range(2):
        assert request(f"{consul}/v1/agent/service/deregister/{sid}", "PUT")[0] == 200
        wait_until(lambda: _agent_service(consul, sid) == 200, timeout=10, what=f"{sid} re-registered ({i + 1}/2)")


def test_consul_registration_lifecycle(consul: str) -> None:
    s = Sample("--service", "api", "--instance", "api-7", "--consul", consul, "--run-id", "run-x",
               "--meta", "zone=z1", "--meta", "priority=0", "--version", "v4")
    control = Sample("--service", "api", "--instance", "api-8", "--consul", consul)
    try:
        s.wait_ready()
        control.wait_ready()
        status, _, svc = get_json(f"{consul}/v1/agent/service/api-7")
        assert status == 200
        assert svc["Service"] == "api" and svc["Port"] == s.port and svc["Address"] == "127.0.0.1"
        assert svc["Tags"] == ["meshbed"]
        assert svc["Meta"] == {"instance": "api-7", "version": "v4", "meshbed_run": "run-x",
                               "zone": "z1", "priority": "0"}

        def check_status() -> str:
            _, _, checks = get_json(f"{consul}/v1/agent/checks")
            return checks["api-7-http"]["Status"]
        wait_until(lambda: check_status() == "passing", what="check passing")
        request(s.base + "/meshbed/health", "POST", {"healthy": False})
        wait_until(lambda: check_status() == "critical", timeout=5, what="check critical")
        request(s.base + "/meshbed/health", "POST", {"healthy": True})
        wait_until(lambda: check_status() == "passing", timeout=5, what="check passing again")

        # removed behind its back (as a restarted dev agent would): it comes back
        request(f"{consul}/v1/agent/service/deregister/api-7", "PUT")
        wait_until(lambda: _agent_service(consul, "api-7") == 200, timeout=6, what="re-registration")

        # on-demand deregister stops the loop until /meshbed/register
        assert request(s.base + "/meshbed/deregister", "POST")[0] == 200
        assert _agent_service(consul, "api-7") == 404
        _reregistered_twice(consul, "api-8")  # a loop of the same code ran meanwhile...
        assert _agent_service(consul, "api-7") == 404  # ...and this one's did not bring it back
        assert request(s.base + "/meshbed/register", "POST")[0] == 200
        assert _agent_service(consul, "api-7") == 200

        assert s.stop() == 0
        assert _agent_service(consul, "api-7") == 404  # deregistered on SIGTERM
    finally:
        s.stop()
        control.stop()


def test_consul_unreachable_exits_nonzero() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    s = Sample("--service", "api", "--consul", dead, "--register-timeout", "1")
    try:
        s.proc.wait(20)
        assert s.proc.returncode == 1
        err = s.proc.stderr.read()
        assert "Consul registration failed" in err and dead in err
    finally:
        s.stop()
