"""builtin, go and your own control plane: policy in Consul KV, clusters named after services."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..policy import KV_MESH_KEY, KV_SERVICES_PREFIX, MeshPolicy, ServicePolicy

# DISC-9's trigger: two route weights that each fit a uint32 but sum past it (Envoy refuses the route)
NACK_WEIGHT = 3_000_000_000


class KvFlavour:
    """The contract of docs/own-control-plane.md: the control plane reads KV and Consul's health API."""

    name = "kv"

    def service_of_cluster(self, cluster: str) -> str:
        return cluster

    def unsupported(self, policy: ServicePolicy, called_by_ingress: bool = False) -> list[str]:
        return []  # whatever it does not implement is measured (policy_apply_p99), not skipped

    def mesh_unsupported(self, policy: MeshPolicy) -> list[str]:
        return []

    def check_unsupported(self, check_id: str) -> str:
        return ""

    def put_policy(self, mesh: Any, service: str, policy: ServicePolicy) -> None:
        mesh.consul_client().kv_put(KV_SERVICES_PREFIX + service, policy.to_json())

    def put_mesh_policy(self, mesh: Any, policy: MeshPolicy) -> None:
        mesh.consul_client().kv_put(KV_MESH_KEY, policy.to_json())

    def nack_trigger(self, mesh: Any, service: str, baseline: ServicePolicy) -> dict[str, Any]:
        """Weights that each fit a uint32 but add up past one: valid meshbed input, schema-valid xDS
        (so a control plane validating against the proto rules still sends it), and refused by Envoy's
        route validation ("the sum of weights ... exceeds 4294967295")."""
        versions = sorted({mesh.instances[i].version for i in mesh.instances_of(service)}) or ["v1"]
        weights = {versions[0]: NACK_WEIGHT, (versions[1] if len(versions) > 1 else "nack"): NACK_WEIGHT}
        bad = dataclasses.replace(baseline, weights=weights)
        self.put_policy(mesh, service, bad)
        return {"how": "policy in Consul KV", "policy": bad.to_json(),
                "why_envoy_rejects": f"weighted_clusters total {2 * NACK_WEIGHT} > 4294967295 (Envoy's route check)"}

    def registration(self, instance: str, service: str, advertise: str, app: str,
                     upstreams: dict[str, tuple[str, int]],
                     public: tuple[str, int] | None = None) -> dict[str, Any] | None:
        return None
