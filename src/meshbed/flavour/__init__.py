"""Control-plane flavours: what differs between meshes wired for builtin/go and for Consul Connect.

A flavour holds, in one place, the knowledge of how its mesh names clusters
and endpoints, where a policy goes and how an instance registers. The shared
steps (:mod:`meshbed.policy_control`, :mod:`meshbed.observe.discovery_helpers`,
:mod:`meshbed.observe.envoy_admin` via :mod:`meshbed.flavour.naming`) ask it,
so the suites never branch on the control plane.

- :class:`~meshbed.flavour.builtin.KvFlavour`: builtin, go and any command
  template: policy in Consul KV, clusters named after services, Host-header routing.
- :class:`~meshbed.flavour.connect.ConnectFlavour`: ``--controlplane consul-connect``:
  policy as Consul config entries, Connect cluster names, sidecar services.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..policy import MeshPolicy, ServicePolicy


class Flavour(Protocol):
    """What the shared steps ask about a mesh's control-plane flavour."""

    name: str

    def service_of_cluster(self, cluster: str) -> str:
        """The service an Envoy cluster serves."""
        ...

    def unsupported(self, policy: ServicePolicy, called_by_ingress: bool = False) -> list[str]:
        """Why this flavour cannot express ``policy`` ([] when it can): the checks needing it are skipped."""
        ...

    def mesh_unsupported(self, policy: MeshPolicy) -> list[str]:
        """The same for the mesh-wide policy."""
        ...

    def check_unsupported(self, check_id: str) -> str:
        """Why a whole check cannot run on this flavour ('' when it can): it is skipped at collection."""
        ...

    def put_policy(self, mesh: Any, service: str, policy: ServicePolicy) -> None:
        """Make ``policy`` the control plane's input for ``service`` (returns once written)."""
        ...

    def put_mesh_policy(self, mesh: Any, policy: MeshPolicy) -> None:
        ...

    def nack_trigger(self, mesh: Any, service: str, baseline: ServicePolicy) -> dict[str, Any]:
        """Make the control plane send config for ``service`` that Envoy rejects; returns what was done.

        NACK-1's "bad" step: a policy value that is valid meshbed input but breaks Envoy's own
        validation, or, where the flavour validates it away, a documented trigger of its own.
        """
        ...

    def registration(self, instance: str, service: str, advertise: str, app: str,
                     upstreams: dict[str, tuple[str, int]],
                     public: tuple[str, int] | None = None) -> dict[str, Any] | None:
        """Extra fields of an instance's Consul registration (None: a plain service); ``upstreams``:
        service -> the local (host, port) the app dials it on, where the flavour has such ports."""
        ...


def for_controlplane(controlplane: str) -> Flavour:
    """The flavour a ``--controlplane`` value stands for."""
    from ..components.controlplane import is_connect
    if is_connect(controlplane):
        from .connect import ConnectFlavour
        return ConnectFlavour()
    from .builtin import KvFlavour
    return KvFlavour()


def of(mesh: Any) -> Flavour:
    """The flavour of a running mesh."""
    return for_controlplane(mesh.settings.controlplane)


__all__ = ["Flavour", "for_controlplane", "of"]
