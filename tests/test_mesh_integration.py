"""The foundation, end to end, on real binaries: examples/basic.yaml through the ingress."""

from __future__ import annotations

import uuid

import pytest

from meshbed import httpc, wait
from meshbed.observe import envoy_admin
from meshbed.observe.jaeger import JaegerClient

pytestmark = pytest.mark.integration


def get(mesh, path="/"):
    rid = str(uuid.uuid4())
    r = httpc.get(mesh.ingress_url + path, timeout=10, headers={"x-request-id": rid})
    return rid, r


def test_request_names_a_frontend_and_a_backend_instance(mesh):
    _, r = get(mesh)
    assert r.status == 200, r.text
    body = r.json()
    assert body["service"] == "frontend" and body["instance"].startswith("frontend-")
    assert r.headers["x-meshbed-instance"] == body["instance"]
    (down,) = body["downstream"]
    assert down["service"] == "backend" and down["instance"].startswith("backend-")


def test_repeated_requests_reach_every_instance(mesh):
    seen: set[str] = set()
    for _ in range(60):
        _, r = get(mesh)
        assert r.status == 200
        b = r.json()
        seen.add(b["instance"])
        seen.update(d["instance"] for d in b["downstream"])
    assert seen == set(mesh.apps), f"never reached: {set(mesh.apps) - seen}"


def test_request_is_one_complete_trace_in_jaeger(mesh):
    rid, r = get(mesh)
    trace_id = r.json()["trace_id"]
    jaeger = JaegerClient(mesh.jaeger.url("query_http"))
    expected = {("ingress", 3), ("frontend-sidecar", 2), ("frontend", 2), ("frontend", 3),
                ("frontend-sidecar", 3), ("backend-sidecar", 2), ("backend", 2)}

    def complete():
        spans = jaeger.trace(trace_id)
        got = {(s.service, s.kind) for s in spans}
        if not expected <= got:
            raise wait.NotYet(f"have {sorted(got)}")
        return spans

    spans = wait.until(complete, deadline=20, interval=0.5, what=f"trace {trace_id} in Jaeger").value
    assert {s.trace_id for s in spans} == {trace_id}
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert len(roots) == 1 and roots[0].service == "ingress"
    assert all(s.parent_id in ids for s in spans if s.parent_id), "orphan span"
    envoy_spans = [s for s in spans if s.service.endswith("sidecar") or s.service == "ingress"]
    assert all(s.attributes.get("guid:x-request-id") == rid for s in envoy_spans)


def test_deregistered_instance_leaves_every_envoy_without_restart(mesh):
    victim = "backend-1"
    addr = mesh.advertised[victim]
    subscribers = mesh.subscribers("backend")
    pids_before = {n: h.pid for n, h in mesh.envoys.items()}
    app = mesh.apps[victim]
    assert httpc.request("POST", app.url("http", "/meshbed/deregister"), timeout=5).status == 200
    try:
        def gone():
            still = [n for n, h in subscribers.items()
                     if addr in {x.address for x in envoy_admin.clusters(h.url("admin")).get("backend", [])}]
            if still:
                raise wait.NotYet(f"still listed by {still}")
            return True

        wait.until(gone, deadline=10, interval=0.01, what=f"{victim} to leave every Envoy's backend cluster")
    finally:
        assert httpc.request("POST", app.url("http", "/meshbed/register"), timeout=5).status == 200

    def back():
        return all(addr in envoy_admin.healthy_addresses(h.url("admin"), "backend") for h in subscribers.values())

    wait.until(back, deadline=10, interval=0.05, what=f"{victim} to return to every Envoy")
    assert {n: h.pid for n, h in mesh.envoys.items()} == pids_before, "an Envoy was restarted"
