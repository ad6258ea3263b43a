"""Unit tests of the sample service's pure parts: flags, payloads, faults, encoding."""

from __future__ import annotations

import hashlib

import pytest

from meshbed.sample.app import forwarded_headers
from meshbed.sample.config import HostPort, parse_args, parse_hostport, parse_meta
from meshbed.sample.payload import payload_bytes, payload_sha256
from meshbed.sample.registration import service_definition
from meshbed.sample.state import FaultPlan, Stats


def test_parse_args_full() -> None:
    c = parse_args([
        "--service", "frontend", "--instance", "frontend-1", "--listen", "127.0.0.1:21000",
        "--version", "v2", "--downstream", "backend", "--downstream", "db,cache",
        "--sidecar", "127.0.0.1:15001", "--consul", "127.0.0.1:8500/",
        "--advertise", "10.0.0.1:9000", "--meta", "priority=0", "--meta", "zone=z1",
        "--otlp", "http://127.0.0.1:4318/v1/traces", "--run-id", "r1", "--quiet",
    ])
    assert c.service == "frontend" and c.instance == "frontend-1" and c.version == "v2"
    assert c.listen == HostPort("127.0.0.1", 21000)
    assert c.downstreams == ("backend", "db", "cache")
    assert c.sidecar == HostPort("127.0.0.1", 15001)
    assert c.consul == "http://127.0.0.1:8500"
    assert c.advertised == HostPort("10.0.0.1", 9000)
    assert c.meta == {"priority": "0", "zone": "z1"}
    assert c.run_id == "r1" and c.quiet


def test_parse_args_defaults() -> None:
    c = parse_args(["--service", "backend", "--listen", "0.0.0.0:21001"])
    assert c.instance == "backend-0" and c.version == "v1" and c.downstreams == ()
    assert c.advertised == HostPort("127.0.0.1", 21001)  # wildcard is not dialable
    assert c.consul is None and c.otlp is None and not c.quiet


@pytest.mark.parametrize("argv", [
    ["--service", "a", "--listen", "nope"],
    ["--service", "a", "--listen", "127.0.0.1:99999"],
    ["--service", "a", "--listen", "127.0.0.1:1", "--downstream", "b"],  # no --sidecar
    ["--service", "a", "--listen", "127.0.0.1:1", "--meta", "novalue"],
    ["--listen", "127.0.0.1:1"],
])
def test_parse_args_rejects(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_hostport_and_meta_helpers() -> None:
    assert parse_hostport("[::1]:80") == HostPort("::1", 80)
    assert str(parse_hostport("h:1")) == "h:1"
    assert parse_meta(["a=b=c", " k = v "]) == {"a": "b=c", "k": "v"}
    with pytest.raises(ValueError):
        parse_meta(["=x"])


def test_payload_is_deterministic() -> None:
    assert payload_bytes(0) == b""
    assert payload_bytes(20) == b"0123456789abcdef0123"
    big = 3 * 1024 * 1024 + 5
    assert len(payload_bytes(big)) == big
    for n in (7, big):
        assert payload_sha256(n) == hashlib.sha256(payload_bytes(n)).hexdigest()
    with pytest.raises(ValueError):
        payload_bytes(-1)


@pytest.mark.parametrize("ratio,n,expected", [(0.5, 10, 5), (0.25, 8, 2), (1.0, 6, 6), (0.0, 6, 0), (0.3, 10, 3)])
def test_fault_plan_is_even_and_exact(ratio: float, n: int, expected: int) -> None:
    plan = FaultPlan()
    plan.set("5xx", ratio)
    hits = [plan.next() for _ in range(n)]
    assert hits.count("5xx") == expected
    if ratio == 0.5:
        assert hits == ["none", "5xx"] * 5  # every k-th, not random


def test_fault_plan_validates() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.set("explode", 0.5)
    with pytest.raises(ValueError):
        plan.set("5xx", 1.5)
    plan.set("none", 1.0)
    assert plan.next() == "none"


def test_stats_counts_and_resets() -> None:
    s = Stats()
    s.begin("/a")
    s.begin("/a")
    s.end(200)
    s.begin("/b")
    s.end("reset")
    snap = s.snapshot()
    assert snap["requests"] == 3 and snap["by_path"] == {"/a": 2, "/b": 1}
    assert snap["by_status"] == {"200": 1, "reset": 1}
    assert snap["in_flight"] == 1 and snap["max_in_flight"] == 2
    s.reset()
    assert s.snapshot()["requests"] == 0 and s.max_in_flight == 1
    s.end(200)
    assert s.in_flight == 0


def test_forwarded_headers_picks_only_the_mesh_ones() -> None:
    got = forwarded_headers({
        "X-Request-Id": "r", "x-user": "u", "X-Meshbed-Canary": "1",
        "traceparent": "t", "host": "h", "accept": "*/*",
    })
    assert got == {"x-request-id": "r", "x-user": "u", "x-meshbed-canary": "1"}


def test_service_definition() -> None:
    c = parse_args([
        "--service", "backend", "--instance", "backend-2", "--listen", "127.0.0.1:21002",
        "--advertise", "127.0.0.1:15002", "--consul", "http://c", "--run-id", "r9",
        "--meta", "priority=0", "--version", "v3",
    ])
    d = service_definition(c)
    assert d["ID"] == "backend-2" and d["Name"] == "backend"
    assert (d["Address"], d["Port"]) == ("127.0.0.1", 15002)
    assert d["Tags"] == ["meshbed"]
    assert d["Meta"] == {"instance": "backend-2", "version": "v3", "meshbed_run": "r9", "priority": "0"}
    assert d["Check"]["HTTP"] == "http://127.0.0.1:21002/healthz"
    assert d["Check"]["CheckID"] == "backend-2-http" and d["Check"]["Status"] == "passing"


def test_otlp_json_encoding() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from meshbed.sample import tracing
    from meshbed.sample.otlp_json import encode_request

    c = parse_args(["--service", "backend", "--instance", "backend-0", "--listen", "127.0.0.1:1"])
    mem = InMemorySpanExporter()
    provider = tracing.make_provider(c)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("t")
    parent = tracing.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    span = tracer.start_span("GET /", context=parent, kind=SpanKind.SERVER, attributes={"n": 3, "ok": True})
    assert tracing.trace_id_hex(span) == "0af7651916cd43dd8448eb211c80319c"
    headers: dict[str, str] = {}
    tracing.inject(span, headers)
    assert headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    span.end()
    req = encode_request(mem.get_finished_spans())
    rs = req["resourceSpans"][0]
    res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "backend"}
    assert res["service.instance.id"] == {"stringValue": "backend-0"}
    s = rs["scopeSpans"][0]["spans"][0]
    assert s["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert s["parentSpanId"] == "b7ad6b7169203331" and s["kind"] == 2
    attrs = {a["key"]: a["value"] for a in s["attributes"]}
    assert attrs["n"] == {"intValue": "3"} and attrs["ok"] == {"boolValue": True}


def test_unsampled_parent_stays_unsampled() -> None:
    from meshbed.sample import tracing

    c = parse_args(["--service", "b", "--listen", "127.0.0.1:1"])
    tracer = tracing.make_provider(c).get_tracer("t")
    parent = tracing.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
    span = tracer.start_span("x", context=parent)
    assert not span.get_span_context().trace_flags.sampled
    assert not span.is_recording()
