"""``--controlplane consul-connect``: Consul's own service mesh, asked the same questions as builtin/go.

Where a policy goes: Consul KV still holds meshbed's policy (so ``policy_control.current``
reads it back), and :mod:`meshbed.flavour.connect_translate` turns it into config
entries, which are what Consul's xDS server serves from. Cluster names follow
:mod:`meshbed.flavour.naming`. An instance registers with a ``connect.sidecar_service``
(:mod:`meshbed.flavour.connect_wiring`).
"""

from __future__ import annotations

from typing import Any

from .. import httpc
from ..errors import ComponentError
from ..policy import KV_MESH_KEY, KV_SERVICES_PREFIX, MeshPolicy, ServicePolicy
from . import connect_translate as tr
from .naming import service_of_cluster

EDGE_SAMPLING = ("mesh.sampling_percent: Consul 1.14 sets random_sampling 0 % on every HTTP connection manager "
                 "and has no field for the edge's sampling (envoy_listener_tracing_json came later)")


class ConfigEntries:
    """Consul's /v1/config API (the inputs of its xDS server)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base, self.timeout = base_url.rstrip("/"), timeout

    def _req(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> httpc.Response:
        try:
            r = httpc.request(method, self.base + path, body, timeout=self.timeout)
        except OSError as exc:
            raise ComponentError(f"consul {method} {path}: no answer from {self.base} ({exc})",
                                 hint="is Consul running (or paused by a test)?") from exc
        if r.status not in ok:
            raise ComponentError(f"consul {method} {path}: HTTP {r.status}: {r.text.strip()[:300]}",
                                 hint="the config entry was refused; see docs/consul-connect.md")
        return r

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        r = self._req("GET", f"/v1/config/{kind}/{name}", ok=(200, 404))
        return None if r.status == 404 else r.json()

    def put(self, entry: dict[str, Any]) -> None:
        r = self._req("PUT", "/v1/config", entry)
        if r.text.strip() != "true":
            raise ComponentError(f"consul refused config entry {entry.get('Kind')}/{entry.get('Name')}: {r.text[:200]}")

    def delete(self, kind: str, name: str) -> None:
        self._req("DELETE", f"/v1/config/{kind}/{name}")


def apply_entries(ce: ConfigEntries, service: str, policy: ServicePolicy, callers: list[str]) -> dict[str, Any]:
    """Write ``policy`` for ``service`` as config entries, in an order Consul accepts; returns what was written.

    Kinds no longer needed go first (router, splitter, resolver: a splitter naming subsets must
    not outlive them), then resolver, splitter, router; then each caller's upstream overrides.
    """
    want = tr.translate(service, policy)
    have = {k: ce.get(k, service) for k in tr.KINDS}
    for kind in reversed(tr.KINDS):
        if have[kind] is not None and (want.by_kind()[kind] is None or kind == "service-splitter"):
            ce.delete(kind, service)
    for kind, entry in want.by_kind().items():
        if entry is not None:
            ce.put(entry)
    for caller in callers:
        if caller == "ingress":
            continue  # the ingress gateway follows the service's discovery chain; see unsupported()
        ce.put(tr.caller_defaults(caller, ce.get("service-defaults", caller), service, want.override))
    return {k: v for k, v in want.by_kind().items() if v is not None} | {"override": want.override}


# checks that judge spans of traffic through the mesh: they need the mesh policy's edge sampling (100 %)
NEEDS_SAMPLING = frozenset({"TRACE-1", "TRACE-2", "TRACE-3", "TRACE-4", "TRACE-6", "RES-3"})


class ConnectFlavour:
    name = "consul-connect"

    def check_unsupported(self, check_id: str) -> str:
        if check_id == "RES-4":
            return ("RES-4 restarts each sidecar while its instance is deregistered and waits for it to get "
                    "config; a Connect sidecar is part of its service's registration (sidecar_service), so "
                    "Consul serves it nothing until the app registers again, which RES-4 does only afterwards")
        if check_id in NEEDS_SAMPLING:
            return ("the control plane cannot express the mesh policy this check needs (spans of traffic "
                    "through the mesh): " + EDGE_SAMPLING + "; no request through a Consul 1.14 mesh is traced")
        return ""

    def service_of_cluster(self, cluster: str) -> str:
        return service_of_cluster(cluster)

    def unsupported(self, policy: ServicePolicy, called_by_ingress: bool = False) -> list[str]:
        out = tr.unsupported(policy)
        if called_by_ingress and (policy.outlier_detection is not None or policy.circuit_breaker is not None):
            out.append("outlier_detection/circuit_breaker on a service the ingress gateway calls: Consul 1.14's "
                       "ingress-gateway entry has no per-service PassiveHealthCheck")
        return out

    def mesh_unsupported(self, policy: MeshPolicy) -> list[str]:
        return [EDGE_SAMPLING]

    def put_policy(self, mesh: Any, service: str, policy: ServicePolicy) -> None:
        mesh.consul_client().kv_put(KV_SERVICES_PREFIX + service, policy.to_json())
        callers = [c for c in mesh.topology.callers_of(service)]
        apply_entries(ConfigEntries(mesh.consul.url("http")), service, policy, callers)

    def put_mesh_policy(self, mesh: Any, policy: MeshPolicy) -> None:
        mesh.consul_client().kv_put(KV_MESH_KEY, policy.to_json())

    def nack_trigger(self, mesh: Any, service: str, baseline: ServicePolicy) -> dict[str, Any]:
        """Consul's documented ring-size case: a ring_hash resolver with only MinimumRingSize makes
        Consul 1.14 send ``maximum_ring_size: 0``, which Envoy rejects (issue 10). meshbed's own
        translator always sets both sizes, so the entry is written as a user would write it."""
        entry = {"Kind": "service-resolver", "Name": service,
                 "LoadBalancer": {"Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 1024}}}
        ce = ConfigEntries(mesh.consul.url("http"))
        for kind in ("service-router", "service-splitter"):
            if ce.get(kind, service) is not None:
                ce.delete(kind, service)
        ce.put(entry)
        return {"how": "config entry written directly", "entry": entry,
                "why_envoy_rejects": "Consul sends ring_hash_lb_config.maximum_ring_size 0 (< minimum 1024)"}

    def registration(self, instance: str, service: str, advertise: str, app: str,
                     upstreams: dict[str, tuple[str, int]],
                     public: tuple[str, int] | None = None) -> dict[str, Any] | None:
        from .connect_wiring import sidecar_service
        return {"Connect": sidecar_service(instance, service, advertise, app, upstreams, public)}
