"""meshbed.load: the request log (a CSV with a header, written by the locustfile's
``events.request`` hook) read by column name; and a short real Locust run against
a local server (no mesh)."""

from __future__ import annotations

import csv
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from meshbed.errors import ComponentError
from meshbed.load import COLUMNS, LoadRun, has_request, parse_request_log


def _write(path: Path, rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_parse_by_column_name(tmp_path: Path) -> None:
    # columns in another order, an extra column, a row cut short by a stop, a row that does not parse
    log = _write(tmp_path / "r.csv", [
        ["instances", "status", "extra", "request_id", "latency_ms", "ts", "error"],
        ["a-1|b-2", "200", "x", "r2", "3.5", "1700000001.5", ""],
        ["", "0", "x", "r1", "10000.0", "1700000000.25", "ConnectionResetError: reset"],
        ["a-1", "oops", "x", "r3", "1", "1700000002", ""],
        ["a-1", "200", "x"],
    ])
    reqs = parse_request_log(log)
    assert [r.request_id for r in reqs] == ["r1", "r2"]  # sorted by send time
    assert reqs[0].status == 0 and reqs[0].instances == () and reqs[0].error.startswith("ConnectionResetError")
    assert reqs[1].ts == 1700000001.5 and reqs[1].latency_ms == 3.5 and reqs[1].instances == ("a-1", "b-2")
    assert reqs[1].error == ""


def test_header_without_a_needed_column_is_an_error(tmp_path: Path) -> None:
    log = _write(tmp_path / "r.csv", [["ts", "request_id", "status"], ["1", "r", "200"]])
    with pytest.raises(ComponentError, match="latency_ms"):
        parse_request_log(log)


def test_has_request_needs_a_row_after_the_header(tmp_path: Path) -> None:
    log = tmp_path / "r.csv"
    assert not has_request(log)
    _write(log, [list(COLUMNS)])
    assert not has_request(log)
    _write(log, [list(COLUMNS), ["1", "r", "200", "1", "", ""]])
    assert has_request(log)
    assert parse_request_log(tmp_path / "missing.csv") == []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        status = 503 if self.path.startswith("/bad") else 200
        body = json.dumps({"instance": "front-1", "request_id": self.headers.get("x-request-id", ""),
                           "downstream": [{"instance": "back-2", "downstream": []}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def local_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("path, status", [("/", 200), ("/bad", 503)])
def test_locust_run_records_every_request(local_url: str, tmp_path: Path, path: str, status: int) -> None:
    run = LoadRun(local_url, tmp_path, users=2, user_rps=10, duration_s=3, path=path)
    with run:
        run.wait_started()
        assert run.started_at > 0
    res = run.result()
    with open(run.request_log, newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == COLUMNS  # one header row, then one row per request
    assert 20 <= res.n <= 80, res.n  # 2 users x 10 rps x ~3 s
    assert len({r.request_id for r in res.requests}) == res.n  # each request once
    assert all(r.status == status and r.latency_ms > 0 for r in res.requests)
    assert all(r.instances == ("front-1", "back-2") for r in res.requests)
    assert all((r.error == "") == (status == 200) for r in res.requests)
    assert res.locust_totals.get("num_requests") == res.n  # Locust's own count agrees
    assert res.error_rate_pct == (0.0 if status == 200 else 100.0)
    s = res.summary()
    assert s["requests"] == res.n and s["failures"] == (0 if status == 200 else res.n)
    assert sum(row["rps"] for row in res.history()) == res.n
    assert len(res.between(res.requests[0].ts, res.requests[-1].ts + 1)) == res.n
