"""A running mesh: every component's handle, where to reach it, and questions about it.

Read-mostly: what the mesh *is*. Starting it, linking through Toxiproxy and
scaling it while it runs belong to :mod:`meshbed.mesh_build` (``mesh.scale``
hands out its :class:`~meshbed.mesh_build.Scaler`). A mesh meshbed did not
start is the same handle, built by :mod:`meshbed.attach` from its endpoints
(``origin="attached"``; its Toxiproxy may be absent).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from . import httpc, wait
from .chaos.toxiproxy import ToxiproxyClient
from .components import controlplane as cp_c
from .errors import ComponentError
from .observe import envoy_admin
from .observe.consul import ConsulClient
from .runtime.base import Handle, Runtime
from .settings import Settings
from .topology import InstanceSpec, Topology

class Scaling(Protocol):
    """How a running mesh changes (implemented by :class:`meshbed.mesh_build.Scaler`)."""

    def add_instance(self, service: str, version: str = "v1", priority: int = 0, zone: str = "zone-a",
                     wait_ready: bool = True) -> str: ...

    def remove_instance(self, instance: str) -> None: ...

    def watcher_envoys(self, count: int, upstreams: tuple[str, ...], xds_api: str | None = None, start: int = 0,
                       ready_s: float | None = None) -> contextlib.AbstractContextManager[dict[str, Handle]]: ...

    def watcher_envoy(self, upstreams: tuple[str, ...], xds_api: str,
                      ready_s: float | None = None) -> contextlib.AbstractContextManager[Handle]: ...


@dataclass
class Mesh:
    """A running mesh: every component's handle, and where to reach it."""

    topology: Topology
    run_id: str
    run_dir: Any
    runtime: Runtime
    consul: Handle
    jaeger: Handle
    toxiproxy: Handle | None  # None: an attached mesh without Toxiproxy
    controlplane: Handle
    settings: Settings
    wiring: Any = field(repr=False)  # how to start one more component (meshbed.mesh_build.Wiring)
    scaler: Callable[["Mesh"], Scaling] = field(repr=False)  # meshbed.mesh_build.Scaler
    ingress: Handle | None = None
    sidecars: dict[str, Handle] = field(default_factory=dict)
    apps: dict[str, Handle] = field(default_factory=dict)
    instances: dict[str, InstanceSpec] = field(default_factory=dict)
    # toxiproxy proxy names by link kind: {"upstream": {"backend-0": "upstream-backend-0"}, ...}
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    # the Consul-registered address of each instance (a Toxiproxy port when the upstream link is proxied)
    advertised: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # instances started after bring-up (scale-up), removed again by baseline reset
    extra: list[str] = field(default_factory=list)
    # the Envoy between the control plane and Consul that can make Consul answer 503 (with chaos link consul)
    consul_gate: Handle | None = None
    # registry eureka: meshbed's Eureka server (None when external or on Consul) and its REST base URL
    eureka: Handle | None = None
    eureka_url: str = ""
    # "started" (bring_up) or "attached" (meshbed.attach: endpoints from a mesh.json)
    origin: str = "started"

    @property
    def envoys(self) -> dict[str, Handle]:
        out = dict(self.sidecars)
        if self.ingress is not None:
            out["ingress"] = self.ingress
        return out

    @property
    def ingress_url(self) -> str:
        assert self.ingress is not None
        return self.ingress.url("outbound")

    @property
    def cp_debug_url(self) -> str | None:
        """The reference control plane's debug API (push log); None for other control planes."""
        if self.origin == "attached":  # mesh.json's controlplane.debug_url, when it gave one
            return self.controlplane.url("http") if "http" in self.controlplane.spec.ports else None
        if not cp_c.is_builtin(self.settings.controlplane):
            return None
        return self.controlplane.url("http")

    def consul_client(self) -> ConsulClient:
        """The registry and the policy KV; with registry eureka the catalog calls go to Eureka."""
        if self.eureka_url:
            from .observe.eureka import EurekaRegistryClient
            return EurekaRegistryClient(self.consul.url("http"), self.eureka_url)
        return ConsulClient(self.consul.url("http"))

    def toxiproxy_client(self) -> ToxiproxyClient:
        if self.toxiproxy is None:  # an attached mesh without Toxiproxy: no proxy, nothing to reset
            return _NoToxiproxy("")
        return ToxiproxyClient(self.toxiproxy.url("api"))

    def control(self, instance: str, path: str, body: Any = None) -> None:
        """POST to an instance's own control endpoint (/meshbed/register, /meshbed/health, ...)."""
        r = httpc.request("POST", self.apps[instance].url("http", path), body, timeout=5)
        if r.status != 200:
            raise ComponentError(f"{instance} {path}: HTTP {r.status}: {r.text[:100]}")

    def instances_of(self, service: str) -> list[str]:
        return [i for i, spec in self.instances.items() if spec.service == service]

    def subscribers(self, service: str) -> dict[str, Handle]:
        """The Envoys that route to ``service`` (by node name)."""
        callers = set(self.topology.callers_of(service))
        out = {}
        for n, h in self.envoys.items():
            svc = "ingress" if n == "ingress" else self.instances[n].service
            if svc in callers:
                out[n] = h
        return out

    @property
    def scale(self) -> Scaling:
        """Change the mesh while it runs: add or remove instances, watcher Envoys, Toxiproxy links."""
        return self.scaler(self)

    def all_handles(self) -> list[Handle]:
        gate = [self.consul_gate] if self.consul_gate is not None else []
        toxi = [self.toxiproxy] if self.toxiproxy is not None else []
        gate = [*gate, self.eureka] if self.eureka is not None else gate
        return [self.consul, self.jaeger, *toxi, *gate, self.controlplane, *self.envoys.values(),
                *self.apps.values()]


class _NoToxiproxy(ToxiproxyClient):
    """The Toxiproxy of a mesh that has none: lists no proxy; a fault on one is refused in one line."""

    def proxies(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        return None

    def _call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        raise ComponentError("the attached mesh has no Toxiproxy (mesh.json: toxiproxy_api)",
                             hint="checks that fault links are skipped without it")


def expected_endpoints(mesh: Mesh, service: str) -> set[str]:
    """The registered addresses of every passing instance of ``service``, from Consul."""
    return {i.address for i in mesh.consul_client().instances(service) if i.status == "passing"}


def wait_converged(mesh: Mesh, deadline: float) -> None:
    """Every Envoy lists exactly the healthy instances Consul has for each of its upstreams."""
    def probe() -> object:
        missing = []
        for svc in mesh.topology.services:
            want = expected_endpoints(mesh, svc)
            n = len(mesh.instances_of(svc))
            if len(want) < n:
                missing.append(f"consul has {len(want)}/{n} passing {svc}")
                continue
            for node, h in mesh.subscribers(svc).items():
                got = envoy_admin.healthy_addresses(h.url("admin"), svc)
                if got != want:
                    missing.append(f"{node}:{svc} has {len(got & want)}/{len(want)}")
        if missing:
            raise wait.NotYet("; ".join(missing[:6]))
        return True

    wait.until(probe, deadline, interval=0.1, what="every Envoy to list every registered instance healthy",
               hint="check the controlplane log and `meshbed status`")
