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


def test_a_service_propagation_reaches_its_instances_and_is_validated():
    from meshbed.components import mesh_options
    from meshbed.errors import ConfigError
    from meshbed.topology import parse
    topo = parse({**TOPOLOGY, "services": {"web": {"calls": ["api"]}, "api": {"propagation": "w3c"}}})
    assert topo.services["web"].propagation == "" and topo.services["api"].propagation == "w3c"
    assert mesh_options.service_env(topo.services["web"]) == {}
    assert mesh_options.service_env(topo.services["api"]) == {b3.PROPAGATION_ENV: "w3c"}
    with pytest.raises(ConfigError, match=r"services\.api\.propagation: 'zipkin' is not one of w3c, b3, both"):
        parse({**TOPOLOGY, "services": {"web": {"calls": ["api"]}, "api": {"propagation": "zipkin"}}})


def test_an_app_propagating_another_format_than_the_mesh(monkeypatch):
    """w3c on a b3 mesh reads and writes traceparent only; `both` reads the mesh's format first, writes both."""
    monkeypatch.setenv(b3.ENV, "b3")
    monkeypatch.setenv(b3.PROPAGATION_ENV, "w3c")
    w3c_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    b3_headers = {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}
    assert not _ctx_of(tracing.extract(b3_headers)).is_valid
    span = TracerProvider().get_tracer("t").start_span("s")
    out: dict[str, str] = {}
    tracing.inject(span, out)
    assert "traceparent" in out and "x-b3-traceid" not in out
    monkeypatch.setenv(b3.PROPAGATION_ENV, "both")
    both = _ctx_of(tracing.extract({**b3_headers, "traceparent": w3c_parent}))
    assert format(both.trace_id, "032x") == TRACE  # the mesh's (B3) context wins
    assert format(_ctx_of(tracing.extract({"traceparent": w3c_parent})).trace_id, "032x").startswith("0af765")
    out = {}
    tracing.inject(span, out)
    assert "traceparent" in out and out["x-b3-traceid"] == format(span.get_span_context().trace_id, "032x")
    monkeypatch.setenv(b3.ENV, "w3c")
    w = _ctx_of(tracing.extract({**b3_headers, "traceparent": w3c_parent}))
    assert format(w.trace_id, "032x").startswith("0af765")  # on a w3c mesh, traceparent wins


def _run_trace6(tmp_path, topology: dict) -> dict:
    """`meshbed run --check TRACE-6` on ``topology`` (30 requests): the check's result from conformance.json."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(topology))
    (tmp_path / "profile.yaml").write_text("extends: default\nchecks:\n  TRACE-6: {params: {requests: 30}}\n")
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "run", "-f", str(tmp_path / "topo.yaml"),
                        "--profile", str(tmp_path / "profile.yaml"), "--check", "TRACE-6", "--ready-timeout", "240",
                        "--out", str(tmp_path / "out"), "--state-dir", str(tmp_path / "state")],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900)
    out = tmp_path / "out" / "conformance.json"
    assert out.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    (check,) = [c for c in json.loads(out.read_text())["checks"] if c["id"] == "TRACE-6"]
    return check


@pytest.mark.integration
@pytest.mark.parametrize("api_propagation,verdict", [("b3", "pass"), ("w3c", "fail")])
def test_trace6_names_the_hop_where_an_app_propagates_traceparent_on_a_b3_mesh(tmp_path, api_propagation, verdict):
    topo = {**TOPOLOGY, "services": {"web": {"calls": ["api"]}, "api": {"propagation": api_propagation}}}
    c = _run_trace6(tmp_path, topo)
    figs = {f["name"]: f["value"] for f in c["figures"]}
    hops = [h["hop"] for h in c["evidence"]["broken_hops"]]
    print(f"TRACE-6 api propagation {api_propagation}: {c['verdict']} {figs} broken_hops {hops} ({c['reason']})")
    assert c["verdict"] == verdict, c["reason"]
    if verdict == "pass":
        assert figs["complete"] == 100.0 and hops == []
    else:
        assert hops == ["web -> api"] and figs["broken_hops"] == 1 and figs["complete"] < 99.9


def test_the_wrong_tracer_mutant_swaps_envoys_tracer_both_ways(monkeypatch):
    from meshbed.controlplane import mutants
    from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
    monkeypatch.setattr(resources, "http_connection_manager", resources.http_connection_manager)  # undone after
    mutants.apply("wrong-tracer")
    meta = NodeMeta(role="sidecar", service="web", instance="web-0", inbound_port=1, app_address="127.0.0.1:2",
                    trace_service="web-sidecar")
    hcm = resources.http_connection_manager("in", "r", zipkin.zipkin_node(meta)[0], 100)
    assert hcm.tracing.provider.name == "envoy.tracers.opentelemetry"  # a B3 node gets W3C
    otel = opentelemetry_pb2.OpenTelemetryConfig()
    hcm.tracing.provider.typed_config.Unpack(otel)
    assert otel.grpc_service.envoy_grpc.cluster_name == "jaeger_otlp" and otel.service_name == "web-sidecar"
    hcm = resources.http_connection_manager("in", "r", meta, 100)
    assert hcm.tracing.provider.name == "envoy.tracers.zipkin"  # a W3C node gets B3
    cfg = zipkin_pb2.ZipkinConfig()
    hcm.tracing.provider.typed_config.Unpack(cfg)
    assert cfg.collector_cluster == "jaeger_otlp"
