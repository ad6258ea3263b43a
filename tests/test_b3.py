"""tracing: b3 -- the sample's B3 propagator, Envoy's Zipkin tracer config, and one complete trace through Jaeger."""

from __future__ import annotations

import time
import uuid

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from meshbed import httpc, wait
from meshbed.components import envoy as envoy_c
from meshbed.components import jaeger as jaeger_c
from meshbed.controlplane import resources, zipkin
from meshbed.nodemeta import NodeMeta
from meshbed.ports import PortAllocator
from meshbed.sample import b3, tracing

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"


def _ctx_of(context) -> trace.SpanContext:
    return trace.get_current_span(context).get_span_context()


def test_multi_header_extract_keeps_ids_and_sampling():
    p = b3.B3Propagator()
    sc = _ctx_of(p.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}))
    assert (format(sc.trace_id, "032x"), format(sc.span_id, "016x"), sc.trace_flags.sampled) == (TRACE, SPAN, True)
    assert sc.is_remote
    assert not _ctx_of(p.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "0"})).trace_flags.sampled
    assert _ctx_of(p.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"})).trace_flags.sampled


def test_single_header_and_64_bit_trace_ids():
    p = b3.B3Propagator()
    sc = _ctx_of(p.extract({"b3": f"{TRACE}-{SPAN}-1-05e3ac9a4f6e3b90"}))
    assert format(sc.trace_id, "032x") == TRACE and sc.trace_flags.sampled
    short = _ctx_of(p.extract({"x-b3-traceid": TRACE[16:], "x-b3-spanid": SPAN, "x-b3-sampled": "1"}))
    assert format(short.trace_id, "032x") == "0" * 16 + TRACE[16:]
    assert _ctx_of(p.extract({"b3": f"{TRACE}-{SPAN}-d"})).trace_flags.sampled


@pytest.mark.parametrize("headers", [{}, {"x-b3-traceid": "xyz", "x-b3-spanid": SPAN}, {"b3": "0"},
                                     {"x-b3-traceid": "0" * 32, "x-b3-spanid": SPAN}])
def test_absent_or_bad_headers_start_a_new_trace(headers):
    assert not _ctx_of(b3.B3Propagator().extract(headers)).is_valid


def test_inject_continues_the_trace_as_a_child():
    p = b3.B3Propagator()
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("s", context=p.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}))
    out: dict[str, str] = {}
    p.inject(out, context=trace.set_span_in_context(span))
    assert out["x-b3-traceid"] == TRACE and out["x-b3-parentspanid"] == SPAN and out["x-b3-sampled"] == "1"
    assert out["x-b3-spanid"] == format(span.get_span_context().span_id, "016x") != SPAN
    single: dict[str, str] = {}
    b3.B3Propagator(single=True).inject(single, context=trace.set_span_in_context(span))
    assert single == {"b3": f"{TRACE}-{out['x-b3-spanid']}-1-{SPAN}"}


def test_the_sample_propagates_b3_only_when_its_environment_says_so(monkeypatch):
    monkeypatch.delenv(b3.ENV, raising=False)
    assert b3.active() is None
    assert not _ctx_of(tracing.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN})).is_valid
    monkeypatch.setenv(b3.ENV, "b3")
    assert _ctx_of(tracing.extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"})).is_valid
    span = TracerProvider().get_tracer("t").start_span("s")
    headers: dict[str, str] = {}
    tracing.inject(span, headers)
    assert "x-b3-traceid" in headers and "traceparent" not in headers


def test_zipkin_node_gets_the_zipkin_tracer_and_its_service_name():
    meta = NodeMeta(role="sidecar", service="web", instance="web-0", inbound_port=1, app_address="127.0.0.1:2",
                    trace_service="web-sidecar")
    hcm = resources.http_connection_manager("in", "r", meta, 100)
    assert hcm.tracing.provider.name == "envoy.tracers.opentelemetry"
    zmeta, cluster = zipkin.zipkin_node(meta)
    assert cluster == "web-sidecar" and zipkin.is_zipkin(zmeta)
    hcm = resources.http_connection_manager("in", "r", zmeta, 100)
    assert hcm.tracing.provider.name == "envoy.tracers.zipkin"
    from envoy.config.trace.v3 import zipkin_pb2
    cfg = zipkin_pb2.ZipkinConfig()
    hcm.tracing.provider.typed_config.Unpack(cfg)
    assert (cfg.collector_cluster, cfg.collector_endpoint, cfg.trace_id_128bit) == ("jaeger_zipkin", "/api/v2/spans", True)
    assert cfg.HasField("shared_span_context") and not cfg.shared_span_context.value
    doc = yaml.safe_load(envoy_c.render_bootstrap(meta, admin_host="127.0.0.1", admin_port=3, xds=("127.0.0.1", 4),
                                                  otlp=("127.0.0.1", 5), zipkin=("127.0.0.1", 6)))
    assert doc["node"]["cluster"] == "web-sidecar"
    assert doc["node"]["metadata"]["meshbed"]["trace_cluster"] == "jaeger_zipkin"
    names = [c["name"] for c in doc["static_resources"]["clusters"]]
    assert names == ["xds_cluster", "jaeger_otlp", "jaeger_zipkin"]
    plain = yaml.safe_load(envoy_c.render_bootstrap(meta, admin_host="127.0.0.1", admin_port=3, xds=("127.0.0.1", 4),
                                                    otlp=("127.0.0.1", 5)))
    assert plain["node"]["cluster"] == "web" and len(plain["static_resources"]["clusters"]) == 2


def test_jaeger_gets_a_zipkin_receiver_only_for_b3():
    with_z = jaeger_c.spec("/j", PortAllocator(), zipkin=True)
    doc = yaml.safe_load(with_z.files["jaeger.yaml"])
    assert doc["service"]["pipelines"]["traces"]["receivers"] == ["otlp", "zipkin"]
    assert doc["receivers"]["zipkin"]["endpoint"].endswith(f":{with_z.ports['zipkin']}")
    plain = yaml.safe_load(jaeger_c.spec("/j", PortAllocator()).files["jaeger.yaml"])
    assert "zipkin" not in plain["receivers"] and plain["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


TOPOLOGY = {
    "name": "b3-small",
    "tracing": "b3",
    "services": {"web": {"replicas": 1, "calls": ["api"]}, "api": {"replicas": 1}},
    "ingress": {"routes": [{"prefix": "/", "service": "web"}]},
    "chaos": {"links": []},
}


@pytest.mark.integration
def test_one_request_is_one_complete_b3_trace_in_jaeger(tmp_path):
    from meshbed.mesh_build import bring_up
    from meshbed.observe.jaeger import JaegerClient
    from meshbed.settings import Settings
    from meshbed.topology import parse
    with bring_up(parse(TOPOLOGY), Settings(state_dir=tmp_path / "state", ready_timeout=240.0)) as mesh:
        r = httpc.get(mesh.ingress_url + "/", timeout=20, headers={"x-request-id": str(uuid.uuid4())})
        assert r.status == 200, r.text
        trace_id = r.json()["trace_id"]
        jaeger = JaegerClient(mesh.jaeger.url("query_http"))
        expected = {("ingress", 3), ("web-sidecar", 2), ("web", 2), ("web", 3), ("web-sidecar", 3),
                    ("api-sidecar", 2), ("api", 2)}

        def complete():
            spans = jaeger.trace(trace_id)
            got = {(s.service, s.kind) for s in spans}
            if not expected <= got:
                raise wait.NotYet(f"have {sorted(got)}")
            return spans

        t0 = time.monotonic()
        spans = wait.until(complete, deadline=60, interval=0.5, what=f"B3 trace {trace_id} in Jaeger").value
        assert {s.trace_id for s in spans} == {trace_id}
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if not s.parent_id]
        assert len(roots) == 1 and roots[0].service == "ingress", [(s.service, s.kind, s.parent_id) for s in spans]
        assert all(s.parent_id in ids for s in spans if s.parent_id), "a span's parent is missing"
        print(f"b3 trace complete in Jaeger {time.monotonic() - t0:.1f}s after the answer ({len(spans)} spans)")
