"""Distributed load with Locust's own master/worker mode (``--load-workers N``, issue 12).

- the master aggregates every worker's requests: its totals equal the rows of
  the workers' own request logs, and each worker sent a share;
- each Locust process is in the run state while it runs, and out of it after;
- the achieved rate with 2 workers against 1 process, unpaced users, against a
  target cheaper than Locust itself (a real Envoy answering with a direct
  response), so Locust is the bottleneck. With 4+ usable cores the rate must
  grow. On fewer cores the load generators and the target share them (measured
  here on 2 shared cores: 0.87-1.35x, depending on what else ran), so there
  the test asserts the aggregation and records the ratio as a JUnit property,
  it does not judge it.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from meshbed import wait
from meshbed.load import LoadRun
from meshbed.ports import PortAllocator
from meshbed.runtime import procutil
from meshbed.runtime.state import RunState


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"instance": "front-1"}).encode()
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


def test_master_aggregates_every_worker(local_url: str, tmp_path: Path) -> None:
    state = RunState.create(tmp_path / "runs", "process", "test")
    run = LoadRun(local_url, tmp_path / "load", users=4, user_rps=5, duration_s=4, workers=2, state=state)
    with run:
        run.wait_started()
        recorded = dict(RunState.load(state.run_dir).data["processes"])
        assert sorted(n.split(":")[0] for n in recorded) == ["locust-master", "locust-worker-1", "locust-worker-2"]
        assert {p["pid"] for p in recorded.values()} == {p.pid for p in run.processes}
    res = run.result()
    assert RunState.load(state.run_dir).data["processes"] == {}  # ended: out of the run state
    assert not any(procutil.is_ours(p["pid"], p.get("start")) for p in recorded.values())
    per_worker = [sum(1 for line in f.read_text().splitlines()[1:] if line) for f in run.request_logs]
    assert len(per_worker) == 2 and min(per_worker) >= 0.25 * res.n, per_worker  # both sent a share
    assert res.locust_totals["num_requests"] == res.n == sum(per_worker)  # the master's aggregate: every request
    assert len({r.request_id for r in res.requests}) == res.n
    assert 40 <= res.n <= 120, res.n  # 4 users x 5 rps x ~4 s, split over the workers
    assert res.summary()["locust"].startswith("master + 2 workers")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


DIRECT = """
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: direct
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: direct
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: '{{"instance": "direct-1"}}'}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


@pytest.fixture
def envoy_url(tmp_path: Path) -> Iterator[str]:
    """A real Envoy answering every GET itself: a target far cheaper per request than Locust."""
    from meshbed import httpc
    from meshbed.provision.binaries import require
    port = PortAllocator().take()
    cfg = tmp_path / "direct.yaml"
    cfg.write_text(DIRECT.format(port=port))
    log = open(tmp_path / "envoy.log", "wb")
    proc = subprocess.Popen([str(require("envoy")), "-c", str(cfg), "--concurrency", "1", "-l", "warning",
                             "--use-dynamic-base-id"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpc.get(url + "/", timeout=1).status == 200
            except httpc.HttpError:
                return False
        wait.until(up, deadline=30, interval=0.1, what="the direct-response Envoy", hint=f"see {tmp_path}/envoy.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.integration
def test_rate_with_two_workers_against_one_process(envoy_url: str, tmp_path: Path,
                                                   record_property: Callable[[str, object], None]) -> None:
    rates: dict[int, list[float]] = {0: [], 2: []}
    for rnd in range(3):  # interleaved, so a noisy neighbour hits both sides alike
        for workers in (0, 2):
            run = LoadRun(envoy_url, tmp_path / f"r{rnd}-w{workers}", users=10, user_rps=0, duration_s=5,
                          workers=workers)
            with run:
                run.wait_started()
            res = run.result()
            assert res.failures == 0
            assert res.locust_totals["num_requests"] == res.n  # with workers: the master's aggregate, complete
            if workers:
                shares = [len(f.read_text().splitlines()) - 1 for f in run.request_logs]
                assert min(shares) >= 0.2 * res.n, shares  # both workers sent load
            rates[workers].append(float(res.locust_totals.get("rps") or res.rps))
    one, two = statistics.median(rates[0]), statistics.median(rates[2])
    ratio = two / one
    record_property("rate_one_process_rps", round(one, 1))
    record_property("rate_two_workers_rps", round(two, 1))
    record_property("rate_ratio", round(ratio, 3))
    print(f"achieved rate: 1 process {one:.0f} req/s, 2 workers {two:.0f} req/s ({ratio:.2f}x; "
          f"samples {rates}; {_usable_cpus()} usable CPUs)")
    if _usable_cpus() >= 4:
        assert ratio > 1.2, f"2 workers reached {ratio:.2f}x the rate of 1 process ({one:.0f} -> {two:.0f} req/s)"
    # else: 2 cores shared by the target, the master, 2 workers (and neighbours): measured 0.87-1.35x here,
    # so the ratio is recorded, not judged; the aggregation above is what holds everywhere
