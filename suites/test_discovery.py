"""DISC: discovery convergence (CONFORMANCE.md). Ground truth: every subscribed Envoy's admin API."""

from __future__ import annotations

import time

import pytest

from meshbed import httpc, wait
from meshbed.observe import convergence
from meshbed.stats import summarize

pytestmark = [pytest.mark.discovery, pytest.mark.integration]


def _post(mesh, instance: str, path: str, body=None) -> None:
    r = httpc.request("POST", mesh.apps[instance].url("http", path), body, timeout=5)
    assert r.status == 200, f"{instance} {path}: HTTP {r.status}"


def _admin_urls(handles) -> dict[str, str]:
    return {n: h.url("admin") for n, h in handles.items()}


@pytest.mark.quick
@pytest.mark.check("DISC-1")
def test_disc1_register_new_instance(mesh, check):
    """A new healthy instance appears, healthy, in every subscribed Envoy."""
    repeats = int(check.param("repeats", 5))
    service = "backend"
    inst = mesh.add_instance(service)
    addr = mesh.advertised[inst]
    subs = _admin_urls(mesh.subscribers(service))
    samples: list[float] = []
    per_envoy: dict[str, list[float]] = {n: [] for n in subs}
    acks: list[float] = []
    for _ in range(repeats):
        _post(mesh, inst, "/meshbed/deregister")
        gone = convergence.converge_times(subs, convergence.lacks_host(service, addr), time.time(), 10)
        assert all(v is not None for v in gone.values()), f"setup: {inst} never left {gone}"
        t0 = time.time()
        _post(mesh, inst, "/meshbed/register")
        times = convergence.converge_times(subs, convergence.has_host(service, addr), t0, 10)
        for n, v in times.items():
            # an Envoy that never converged within the deadline counts as the deadline
            per_envoy[n].append(10.0 if v is None else v)
            samples.append(10.0 if v is None else v)
        acks += list(convergence.cp_ack_times(mesh.controlplane.url("http"), t0, "EDS").values())
    s = summarize(samples)
    check.figure("convergence_p99", s.p99, "s", s.n, "envoy admin /clusters", min_n=repeats * len(subs))
    check.figure("convergence_p50", s.p50, "s", s.n, "envoy admin /clusters")
    check.evidence("convergence_s", {"summary": s.to_json(), "per_envoy": per_envoy,
                                     "cp_eds_ack_s": summarize(acks).to_json() if acks else None})
    check.judge()
