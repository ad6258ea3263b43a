"""Sample instances forked from the pre-imported fork server (process runtime): each is its own
process and session, so pause, kill and restart act on exactly one instance."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from meshbed import httpc
from meshbed.components import app as app_c
from meshbed.ports import PortAllocator
from meshbed.readiness import wait_all
from meshbed.runtime import procutil
from meshbed.runtime.base import ComponentSpec
from meshbed.runtime.process import ForkedHandle, ProcessRuntime, forkable
from meshbed.topology import InstanceSpec


def _spec(i: int, port: int) -> ComponentSpec:
    spec = app_c.spec(InstanceSpec("svc", i, "v1", 0, "zone-a"), port, calls=(), sidecar_outbound="",
                      consul_url="http://127.0.0.1:1", advertise=f"127.0.0.1:{port}",
                      otlp_http_url="http://127.0.0.1:1/v1/traces", run_id="t")
    at = spec.argv.index("--consul")  # no Consul here: the instances serve without registering
    del spec.argv[at:at + 2]
    return spec


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime.open(tmp_path)
    try:
        yield rt
    finally:
        rt.close()


def _health(h: ForkedHandle, timeout: float = 2.0) -> int:
    return httpc.get(h.url("http", "/healthz"), timeout=timeout).status


def test_instances_are_forked_each_its_own_session(runtime: ProcessRuntime) -> None:
    ports = PortAllocator()
    hs = [runtime.start(_spec(i, ports.take())) for i in range(3)]
    wait_all(hs, 30)
    assert all(isinstance(h, ForkedHandle) and h.forked for h in hs)
    pids = [h.pid for h in hs]
    assert len(set(pids)) == 3 and runtime.fork_server is not None and runtime.fork_server.proc is not None
    for pid in pids:
        assert pid is not None and procutil._stat(pid)[1] == pid  # type: ignore[index]  # own process group
    assert "listening on" in hs[0].log_tail()  # its own log


def test_pause_and_kill_hit_exactly_one_instance(runtime: ProcessRuntime) -> None:
    ports = PortAllocator()
    a, b = (runtime.start(_spec(i, ports.take())) for i in range(2))
    wait_all([a, b], 30)
    a.pause()
    try:
        with pytest.raises(httpc.Timeout):
            _health(a, timeout=0.5)  # type: ignore[arg-type]
        assert _health(b) == 200  # type: ignore[arg-type]
    finally:
        a.resume()
    assert _health(a) == 200  # type: ignore[arg-type]
    a.kill()
    assert not a.alive() and a.exit_code == -9 and b.alive()
    a.restart()
    wait_all([a], 30)
    assert a.alive() and _health(a) == 200  # type: ignore[arg-type]


def test_a_bad_argument_exits_2_with_the_reason_in_the_log(runtime: ProcessRuntime) -> None:
    spec = _spec(0, PortAllocator().take())
    spec.argv += ["--listen", "nonsense"]
    h = runtime.start(spec)
    assert isinstance(h, ForkedHandle)
    from meshbed import wait
    wait.until(lambda: not h.alive(), 10, what="the instance to exit")
    assert wait.until(lambda: h.exit_code, 5, what="its exit code").value == 2
    assert "HOST:PORT" in h.log_tail()


def test_close_stops_instances_and_the_fork_server(tmp_path: Path) -> None:
    rt = ProcessRuntime.open(tmp_path)
    h = rt.start(_spec(0, PortAllocator().take()))
    wait_all([h], 30)
    server = rt.fork_server
    assert server is not None and server.proc is not None
    pid, started = h.pid, procutil.start_time(h.pid)  # type: ignore[arg-type]
    rt.close()
    assert not procutil.is_ours(pid, started)  # type: ignore[arg-type]
    assert server.proc.poll() is not None


def test_without_the_fork_server_each_instance_is_a_plain_process(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProcessRuntime, "use_fork_server", False)
    rt = ProcessRuntime.open(tmp_path)
    try:
        spec = _spec(0, PortAllocator().take())
        assert forkable(spec)
        h = rt.start(spec)
        assert type(h).__name__ == "ProcessHandle"
        wait_all([h], 30)
    finally:
        rt.close()
