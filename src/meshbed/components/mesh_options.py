"""Which registry (consul | eureka) and trace format (w3c | b3) a mesh uses, decided once before anything starts.

A flag (``--registry``, ``--tracing``, or MESHBED_REGISTRY / MESHBED_TRACING)
wins over the topology's ``registry:`` / ``tracing:`` fields. Eureka and B3
are wired by the builtin control plane only: the Go control plane and a
command template watch Consul and configure OpenTelemetry, so asking for
either with them is a one-line ConfigError before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..provision import eureka as eureka_p
from .controlplane import is_builtin

EUREKA_ENV = "MESHBED_SAMPLE_EUREKA"  # meshbed.sample.registration.EUREKA_ENV: register in Eureka
TRACE_FORMAT_ENV = "MESHBED_SAMPLE_TRACE_FORMAT"  # meshbed.sample.b3.ENV: propagate B3 instead of traceparent
PROPAGATION_ENV = "MESHBED_SAMPLE_PROPAGATION"  # meshbed.sample.b3.PROPAGATION_ENV: a service's own propagation


@dataclass(frozen=True)
class MeshOptions:
    registry: str = "consul"
    tracing: str = "w3c"
    eureka: eureka_p.EurekaServer | None = None  # registry eureka: the server to start, or an external URL

    @property
    def b3(self) -> bool:
        return self.tracing == "b3"

    def app_env(self, eureka_url: str) -> dict[str, str]:
        """What a sample instance's environment says about registry and propagation."""
        env: dict[str, str] = {}
        if self.registry == "eureka":
            env[EUREKA_ENV] = eureka_url
        if self.b3:
            env[TRACE_FORMAT_ENV] = "b3"
        return env


def service_env(service: object) -> dict[str, str]:
    """A service's own propagation (topology ``propagation``, TRACE-6) for its instances' environment."""
    prop = str(getattr(service, "propagation", "") or "")
    return {PROPAGATION_ENV: prop} if prop else {}


def choose(settings: object, topology: object, progress: Callable[[str], None] = lambda s: None) -> MeshOptions:
    """Resolve flags over topology; for Eureka find (or build, on first use) the server. No side effects else."""
    registry = getattr(settings, "registry", "") or getattr(topology, "registry", "consul")
    tracing = getattr(settings, "tracing", "") or getattr(topology, "tracing", "w3c")
    cp = str(getattr(settings, "controlplane", "builtin"))
    for what, value, default in (("registry", registry, "consul"), ("tracing", tracing, "w3c")):
        if value != default and not is_builtin(cp):
            raise ConfigError(f"{what} {value}: only the builtin control plane supports it, not {cp!r}",
                              hint=f"drop --controlplane, or use {what} {default}")
    server = None
    if registry == "eureka":
        server = eureka_p.find()
        if not server.url and getattr(settings, "runtime", "process") != "process":
            raise ConfigError("registry eureka: meshbed starts its Eureka server on the process runtime only",
                              hint=f"use --runtime process, or set {eureka_p.URL_ENV} to a server the containers reach")
        if not server.found:
            server = eureka_p.ensure(progress)  # lazily built on first use (about 45 s cold, 15 s warm)
    return MeshOptions(registry, tracing, server)


def describe(mesh: object) -> dict[str, dict[str, str]]:
    """Report rows (environment.components) naming the registry and trace format a mesh ran with."""
    settings, topo = getattr(mesh, "settings", None), getattr(mesh, "topology", None)
    registry = getattr(settings, "registry", "") or getattr(topo, "registry", "consul")
    tracing = getattr(settings, "tracing", "") or getattr(topo, "tracing", "w3c")
    rows = {"registry": {"version": registry, "source": "--registry" if getattr(settings, "registry", "") else "topology",
                         "path": getattr(mesh, "eureka_url", "") or ""},
            "tracing": {"version": tracing, "source": "--tracing" if getattr(settings, "tracing", "") else "topology",
                        "path": "envoy.tracers.zipkin -> jaeger zipkin receiver" if tracing == "b3"
                        else "envoy.tracers.opentelemetry -> jaeger otlp"}}
    if registry == "eureka":
        s = eureka_p.find()
        rows["eureka"] = {"version": eureka_p.version(s), "source": s.source, "path": str(s.jar or s.url or "")}
    return rows


# catalog needs (CatalogEntry.needs) that fault Consul as the control plane's source of services
CONSUL_SOURCE_NEEDS = ("consul:pause", "toxiproxy:consul", "consul:gate")


def unsupported(needs: tuple[str, ...], registry: str) -> str:
    """Why a check with ``needs`` cannot run on ``registry`` ('' when it can): the skip reason."""
    if registry == "eureka" and any(n in CONSUL_SOURCE_NEEDS for n in needs):
        return ("registry eureka: this check faults Consul as the control plane's source of services; under "
                "Eureka, Consul holds only the policy KV and instance changes reach the control plane through "
                "Eureka (docs/registries.md)")
    return ""
