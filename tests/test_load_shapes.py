"""loadtests/locustfile.py as a Locust user runs it: -u/-r/-t honoured, named shapes only when chosen.

Each test runs the real ``locust`` command (a subprocess: gevent stays out of
pytest) against a local HTTP server, and reads what Locust did from its own
log lines (users ramped to, shape updates, run time) and its ``--json-file`` stats.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

from meshbed.load import LoadRun, locustfile


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"instance": "front-1", "path": self.path}).encode()
        self.send_response(200)
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
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.shutdown()
        srv.server_close()


def _locust(url: str, tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless", "--host", url, "--only-summary",
            "--json-file", str(tmp / "stats"), *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**base, **(env or {})},
                          stdin=subprocess.DEVNULL)


def _at(log: str, text: str) -> float:
    """When Locust logged a line containing ``text`` (seconds since the epoch)."""
    m = re.search(r"^\[([\d-]+ [\d:]+,\d+)\][^\n]*" + re.escape(text), log, re.M)
    assert m, f"no log line with {text!r} in:\n{log[-2000:]}"
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _shape_users(log: str) -> list[int]:
    """The user counts a shape asked for, in order."""
    return [int(x) for x in re.findall(r"Shape test updating to (\d+) users", log)]


def _requests(tmp: Path) -> int:
    return sum(int(r["num_requests"]) for r in json.loads((tmp / "stats.json").read_text()))


def test_users_spawn_rate_and_run_time_as_in_locust(local_url: str, tmp_path: Path) -> None:
    r = _locust(local_url, tmp_path, "-u", "6", "-r", "2", "-t", "5s")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Ramping to 6 users at a rate of 2.00 per second" in r.stderr
    assert "--run-time limit reached" in r.stderr
    assert "will be ignored" not in r.stderr and "Shape test" not in r.stderr  # no shape overrides -u/-r/-t
    assert "(6 total users)" in r.stderr
    spawning = _at(r.stderr, "All users spawned") - _at(r.stderr, "Ramping to 6 users")
    assert 1.5 <= spawning <= 4.0, spawning  # 6 users at 2 per second, not all at once
    ran = _at(r.stderr, "--run-time limit reached") - _at(r.stderr, "Run time limit set to 5 seconds")
    assert 4.5 <= ran <= 6.5, ran


def test_users_are_unpaced_unless_asked(local_url: str, tmp_path: Path) -> None:
    # Locust's default: a user sends its next request when the last is answered (no 4 req/s cap)
    r = _locust(local_url, tmp_path / "free", "-u", "1", "-r", "1", "-t", "3s")
    assert r.returncode == 0, r.stderr[-2000:]
    free = _requests(tmp_path / "free")
    assert free > 40, free  # well over the 12 a 4 req/s cap would allow in 3 s
    r = _locust(local_url, tmp_path / "paced", "-u", "1", "-r", "1", "-t", "3s", "--meshbed-user-rps", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 8 <= _requests(tmp_path / "paced") <= 16


def test_ramp_shape_rises_over_the_run_time(local_url: str, tmp_path: Path) -> None:
    r = _locust(local_url, tmp_path, "-u", "6", "-t", "6s", "--meshbed-shape", "ramp", "--meshbed-user-rps", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    users = _shape_users(r.stderr)
    assert users[0] == 1 and 4 <= max(users) <= 6 and len(users) >= 3, users
    assert users == sorted(users)  # only ever up


def test_spike_shape_triples_in_the_middle(local_url: str, tmp_path: Path) -> None:
    r = _locust(local_url, tmp_path, "-u", "2", "-t", "8s", "--meshbed-user-rps", "2", env={"MESHBED_SHAPE": "spike"})
    assert r.returncode == 0, r.stderr[-2000:]
    users = _shape_users(r.stderr)
    assert users == [2, 6, 2], users  # 3 x 2 in the middle fifth (chosen through the environment variable)


def test_steady_shape_holds_the_users(local_url: str, tmp_path: Path) -> None:
    r = _locust(local_url, tmp_path, "-u", "3", "-r", "3", "-t", "4s", "--meshbed-shape", "steady",
                "--meshbed-user-rps", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _shape_users(r.stderr) == [3]


@pytest.mark.parametrize("args, said", [
    (["-u", "2", "--meshbed-shape", "ramp"], "--meshbed-shape ramp needs -t/--run-time"),
    (["-u", "2", "-t", "2s", "--meshbed-shape", "wave"], "invalid choice: 'wave'"),
])
def test_bad_shape_is_one_line(local_url: str, tmp_path: Path, args: list[str], said: str) -> None:
    r = _locust(local_url, tmp_path, *args)
    assert r.returncode != 0
    assert said in r.stderr


def test_loadrun_passes_locust_options(tmp_path: Path) -> None:
    run = LoadRun("http://127.0.0.1:1", tmp_path, users=10, user_rps=4, duration_s=20.5, shape="spike", path="/x")
    argv = run.argv()
    at = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("-")}
    assert at["-u"] == "10" and at["-r"] == "30" and at["-t"] == "21s"  # whole seconds, never shorter
    assert at["--meshbed-shape"] == "spike" and at["--meshbed-user-rps"] == "4.0" and at["--meshbed-path"] == "/x"
    steady = LoadRun("http://127.0.0.1:1", tmp_path, users=3, duration_s=5).argv()
    assert "--meshbed-shape" not in steady  # steady is Locust's own -u/-r/-t
