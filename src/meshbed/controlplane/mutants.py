"""Planted bugs for ``meshbed selftest``: the reference control plane with one behaviour wrong.

A mutant is applied in the control plane's own process before it starts
(``python -m meshbed.controlplane --mutant NAME``), by replacing one function;
the reference code itself carries no mutant switches. Each mutant names the
checks that must catch it: if any of them passes, the suite has a blind spot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

from . import catalog, consul_watch, resources


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    targets: tuple[str, ...]  # the checks that must fail on it
    apply: Callable[[], None]


def _delay_when_synced(method: str, delay_s: float) -> None:
    """Hand a watcher's answers to its handler ``delay_s`` late, once the first sync is done."""
    cls = consul_watch.ConsulWatcher
    orig = getattr(cls, method)

    @functools.wraps(orig)
    def late(self: Any, *args: Any) -> None:
        if not self.synced.is_set():
            return orig(self, *args)
        asyncio.get_running_loop().call_later(delay_s, lambda: orig(self, *args))
        return None

    setattr(cls, method, late)


def _late_endpoints() -> None:
    _delay_when_synced("_on_health", 3.0)


def _late_policy() -> None:
    _delay_when_synced("_on_kv", 10.0)


def _ignore_critical() -> None:
    orig = catalog.check_health

    def only_warning(checks: Any) -> str:
        health = orig(checks)
        return catalog.HEALTHY if health == catalog.UNHEALTHY else health

    catalog.check_health = only_warning


def _empty_on_consul_error() -> None:
    cls = consul_watch.ConsulWatcher
    orig = cls._note_error

    def note_error(self: Any, name: str, exc: BaseException, first: bool) -> None:
        orig(self, name, exc, first)
        svc = name.removeprefix("health/")
        if name.startswith("health/") and self.state.services.get(svc):
            self.state.services[svc] = ()  # the bug: an unanswered query read as "no instances"
            self._changed()

    cls._note_error = note_error  # type: ignore[method-assign]


def _wrap_policy(fn_name: str, change: Callable[[Any], Any]) -> None:
    """Resource builder ``fn_name(name_or_service, policy)`` sees ``change(policy)`` instead."""
    orig = getattr(resources, fn_name)

    @functools.wraps(orig)
    def wrapped(name: str, policy: Any, *a: Any, **kw: Any) -> Any:
        return orig(name, change(policy), *a, **kw)

    setattr(resources, fn_name, wrapped)


def _ignore_weights() -> None:
    no_weights = lambda p: dataclasses.replace(p, weights={})  # noqa: E731
    _wrap_policy("route_action", no_weights)
    _wrap_policy("service_clusters", no_weights)


def _no_previous_hosts() -> None:
    orig = resources.route_action

    @functools.wraps(orig)
    def route_action(service: str, policy: Any) -> Any:
        ra = orig(service, policy)
        del ra.retry_policy.retry_host_predicate[:]
        ra.retry_policy.ClearField("host_selection_retry_max_attempts")
        return ra

    resources.route_action = route_action


def _ignore_timeout() -> None:
    _wrap_policy("route_action", lambda p: dataclasses.replace(p, timeout_ms=15000))


def _no_outlier_detection() -> None:
    _wrap_policy("eds_cluster", lambda p: dataclasses.replace(p, outlier_detection=None))


def _no_circuit_breaker() -> None:
    _wrap_policy("eds_cluster", lambda p: dataclasses.replace(p, circuit_breaker=None))


def _ignore_lb_policy() -> None:
    _wrap_policy("eds_cluster", lambda p: dataclasses.replace(p, lb_policy="ROUND_ROBIN"))


def _ignore_sampling() -> None:
    orig = resources.listeners

    @functools.wraps(orig)
    def listeners(meta: Any, mesh: Any) -> Any:
        return orig(meta, dataclasses.replace(mesh, sampling_percent=100.0))

    resources.listeners = listeners


def _no_tracing() -> None:
    orig = resources.http_connection_manager

    @functools.wraps(orig)
    def without(*a: Any, **kw: Any) -> Any:
        hcm = orig(*a, **kw)
        hcm.ClearField("tracing")  # the bug: Envoys make no spans, traces lose their proxy hops
        return hcm

    resources.http_connection_manager = without


def _wrong_tracer() -> None:
    """Envoy's tracer ignores the node's trace format: OpenTelemetry (W3C) where the node asks for
    Zipkin (B3), Zipkin (B3) where it asks for OpenTelemetry (W3C); the apps keep the mesh's format."""
    from . import zipkin
    orig = resources.http_connection_manager

    @functools.wraps(orig)
    def swapped(name: str, route_config: str, meta: Any, *a: Any, **kw: Any) -> Any:
        if zipkin.is_zipkin(meta):  # the OTLP cluster is in every bootstrap: Envoy's spans still arrive
            return orig(name, route_config, dataclasses.replace(meta, trace_cluster="jaeger_otlp"), *a, **kw)
        hcm = orig(name, route_config, meta, *a, **kw)
        hcm.tracing.provider.CopyFrom(zipkin.tracing_provider(meta))  # B3 headers; spans to the OTLP cluster, lost
        return hcm

    resources.http_connection_manager = swapped


def _slow_start() -> None:
    """After every (re)start, serve nothing for 8 s: the first Consul sync is held back."""
    cls = consul_watch.ConsulWatcher
    orig = cls._check_synced

    def held(self: Any) -> None:
        if getattr(self, "_released", False):
            return orig(self)
        if not getattr(self, "_held", False):
            self._held = True

            def release() -> None:
                self._released = True
                orig(self)

            asyncio.get_running_loop().call_later(8.0, release)
        return None

    cls._check_synced = held  # type: ignore[method-assign]


def _no_delta() -> None:
    from . import ads

    async def unimplemented(self: Any, request_iterator: Any, context: Any) -> Any:
        import grpc
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "mutant: no delta xDS")
        yield  # pragma: no cover - an async generator, like the real method

    ads.AdsServicer.DeltaAggregatedResources = unimplemented  # type: ignore[method-assign]


def _stuck_after_nack() -> None:
    """After a NACK of a type, a stream never gets that type again (it believes it sent it)."""
    from . import ads
    cls = ads.AdsStream
    orig_nack, orig_collect = cls._on_nack, cls._collect

    def on_nack(self: Any, t: str, ts: Any, error: str) -> None:
        orig_nack(self, t, ts, error)
        self.__dict__.setdefault("_mutant_stuck", set()).add(t)

    def collect(self: Any) -> Any:
        stuck = self.__dict__.get("_mutant_stuck", set())
        return [r for r in orig_collect(self) if r.type_url not in stuck]

    cls._on_nack = on_nack  # type: ignore[method-assign]
    cls._collect = collect  # type: ignore[method-assign]


MUTANTS: dict[str, Mutant] = {m.name: m for m in [
    Mutant("late-endpoints", "endpoint updates applied 3 s late", ("DISC-1", "DISC-2", "DISC-3"), _late_endpoints),
    Mutant("ignore-critical", "critical health ignored (critical instances stay healthy)", ("DISC-3", "LB-5"),
           _ignore_critical),
    Mutant("empty-on-consul-error", "empty endpoints when a Consul query fails", ("DISC-6",), _empty_on_consul_error),
    Mutant("ignore-weights", "route weights by version ignored", ("LB-3",), _ignore_weights),
    Mutant("no-previous-hosts", "retries without the previous-hosts predicate", ("RES-1",), _no_previous_hosts),
    Mutant("ignore-timeout", "the route timeout ignored (Envoy's 15 s default)", ("RES-2",), _ignore_timeout),
    Mutant("no-outlier-detection", "outlier detection missing", ("LB-6",), _no_outlier_detection),
    Mutant("late-policy", "policy changes applied 10 s late", ("LB-3", "RES-2"), _late_policy),
    Mutant("ignore-lb-policy", "LB policy ignored (always ROUND_ROBIN)", ("LB-2", "LB-4"), _ignore_lb_policy),
    Mutant("no-circuit-breaker", "circuit breaker thresholds missing", ("RES-3",), _no_circuit_breaker),
    Mutant("ignore-sampling", "edge sampling percent ignored (always 100 %)", ("TRACE-5",), _ignore_sampling),
    Mutant("no-delta", "serves state-of-the-world ADS only (delta streams refused)", ("DISC-8",), _no_delta),
    Mutant("no-tracing", "no tracing on any listener (Envoys make no spans)", ("TRACE-1", "TRACE-2"), _no_tracing),
    Mutant("wrong-tracer", "Envoy's tracer ignores the node's trace format (W3C for B3, B3 for W3C)",
           ("TRACE-6",), _wrong_tracer),
    Mutant("slow-start", "serves nothing for 8 s after every (re)start", ("DISC-7",), _slow_start),
    Mutant("stuck-after-nack", "after a NACK, never sends that type to that Envoy again", ("DISC-9",),
           _stuck_after_nack),
]}


def apply(name: str) -> Mutant:
    """Plant mutant ``name`` in this process (call before the control plane starts)."""
    m = MUTANTS[name]
    m.apply()
    return m
