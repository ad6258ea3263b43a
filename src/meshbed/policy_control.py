"""Apply a policy to a running mesh and measure how long every affected Envoy takes to show it.

A policy change is a Consul KV write (``meshbed/services/<svc>`` or
``meshbed/mesh``); the control plane under test turns it into xDS. "Shows it"
is judged by :mod:`meshbed.contract` on each subscriber Envoy's own
``/config_dump``: the facts the policy's meaning and Envoy's docs require,
whatever else the control plane sets. A policy that does not show before
the deadline is a measured absence (the Envoy's time is None, judged as the
deadline by ``policy_apply_p99``), never an exception: the check goes on and
measures what the data path does.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import contract, flavour, wait
from .errors import WaitTimeout
from .checks.params import POLICY_DEADLINE_S
from .observe import envoy_admin
from .policy import KV_SERVICES_PREFIX, MeshPolicy, ServicePolicy

RESTORE_DEADLINE_S = 20.0


@dataclass
class Applied:
    """What apply() measured: seconds from the KV write until each Envoy showed the policy (None: never)."""

    service: str
    policy: dict[str, Any]
    per_envoy_s: dict[str, float | None] = field(default_factory=dict)
    endpoints_s: float | None = None
    elapsed_s: float = 0.0
    deadline_s: float = POLICY_DEADLINE_S
    last_seen: dict[str, list[str]] = field(default_factory=dict)  # what each late Envoy still showed

    @property
    def shown(self) -> bool:
        return all(v is not None for v in self.per_envoy_s.values())

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "policy": self.policy,
                "per_envoy_s": {k: None if v is None else round(v, 3) for k, v in self.per_envoy_s.items()},
                "endpoints_s": None if self.endpoints_s is None else round(self.endpoints_s, 3),
                "elapsed_s": round(self.elapsed_s, 3), "deadline_s": self.deadline_s,
                "never_shown": {k: v[:4] for k, v in self.last_seen.items()}}


def ingress_prefixes(mesh: Any, node: str, service: str) -> list[str]:
    return [r.prefix for r in mesh.topology.ingress if r.service == service] if node == "ingress" else []


def _view(admin_url: str) -> contract.EnvoyView:
    return contract.view(envoy_admin.config_dump(admin_url, include_eds=False, timeout=3.0))


def problems(mesh: Any, node: str, admin_url: str, service: str, policy: ServicePolicy) -> list[str]:
    """How this Envoy falls short of ``policy`` for ``service`` ([] when it shows it)."""
    return contract.service_facts(_view(admin_url), service, policy, ingress_prefixes(mesh, node, service))


def _wait_all(checks: dict[str, Any], t0: float, deadline: float, what: str) -> tuple[dict[str, float | None],
                                                                                      dict[str, list[str]]]:
    """Poll ``checks`` (node -> () -> problems) until each is clean once; times from ``t0``, None if never."""
    seen: dict[str, float | None] = {}
    last: dict[str, list[str]] = {}

    def probe() -> bool:
        for n, f in checks.items():
            if n in seen:
                continue
            p = f()
            if p:
                last[n] = p
            else:
                seen[n] = time.monotonic() - t0
                last.pop(n, None)
        if len(seen) < len(checks):
            raise wait.NotYet("; ".join(f"{n}: {p[0]}" for n, p in list(last.items())[:4]))
        return True

    try:
        wait.until(probe, max(0.01, t0 + deadline - time.monotonic()), interval=0.05, what=what)
    except WaitTimeout:
        pass  # a measured absence: the Envoys still missing get None
    return {n: seen.get(n) for n in checks}, last


def wait_shown(mesh: Any, service: str, policy: ServicePolicy, t0: float,
               deadline: float = POLICY_DEADLINE_S) -> tuple[dict[str, float | None], dict[str, list[str]]]:
    subs = {n: h.url("admin") for n, h in mesh.subscribers(service).items()}
    checks = {n: (lambda n=n, u=u: problems(mesh, n, u, service, policy)) for n, u in subs.items()}
    return _wait_all(checks, t0, deadline, f"every subscriber of {service} to show policy {policy.to_json()}")


def endpoint_problems(mesh: Any, service: str, policy: ServicePolicy) -> list[str]:
    """Every subscriber's targets for ``service`` list Consul's passing instances of the right version."""
    passing = {i.address: str(i.meta.get("version", "")) for i in mesh.consul_client().instances(service)
               if i.status == "passing"}
    out = []
    for node, h in mesh.subscribers(service).items():
        url = h.url("admin")
        hosts = {c: {x.address for x in xs if x.healthy} for c, xs in envoy_admin.clusters(url).items()}
        out += [f"{node}: {p}" for p in contract.weighted_targets_ok(
            _view(url), service, policy, hosts, passing, ingress_prefixes(mesh, node, service))]
    return out


def wait_endpoints(mesh: Any, service: str, policy: ServicePolicy, deadline: float = 15.0) -> float | None:
    """Seconds until every subscriber routes to exactly the right instances; None when they never do."""
    t0 = time.monotonic()

    def probe() -> bool:
        p = endpoint_problems(mesh, service, policy)
        if p:
            raise wait.NotYet("; ".join(p[:4]))
        return True

    try:
        wait.until(probe, deadline, interval=0.05, converge=2,
                   what=f"every subscriber of {service} to list Consul's passing instances behind each route target",
                   hint="is every instance registered and passing in Consul?")
    except WaitTimeout:
        return None
    return time.monotonic() - t0


def apply(mesh: Any, service: str, policy: ServicePolicy, deadline: float = POLICY_DEADLINE_S,
          endpoints: bool = True) -> Applied:
    """Hand ``policy`` to the control plane (its flavour says where: Consul KV, or config entries);
    measure when each subscriber shows it (None: not by the deadline)."""
    t0 = time.monotonic()
    flavour.of(mesh).put_policy(mesh, service, policy)
    per, last = wait_shown(mesh, service, policy, t0, deadline)
    a = Applied(service, policy.to_json(), per, deadline_s=deadline, last_seen=last)
    if endpoints and a.shown:
        a.endpoints_s = wait_endpoints(mesh, service, policy, deadline)
    a.elapsed_s = time.monotonic() - t0
    return a


def unsupported(mesh: Any, service: str, policy: ServicePolicy) -> list[str]:
    """Why the mesh's control-plane flavour cannot express ``policy`` for ``service`` ([]: it can)."""
    return flavour.of(mesh).unsupported(policy, called_by_ingress="ingress" in mesh.topology.callers_of(service))


def _skip(reasons: list[str]) -> None:
    if reasons:
        import pytest  # only ever reached inside a check
        pytest.skip("the control plane cannot express this policy: " + "; ".join(reasons))


def skip_unless_expressible(mesh: Any, service: str, policy: ServicePolicy) -> None:
    """Skip the running check (with the reasons) when the flavour cannot express ``policy``."""
    _skip(unsupported(mesh, service, policy))


def current(mesh: Any, service: str) -> ServicePolicy:
    """The policy stored in Consul KV now (the topology's default when there is none)."""
    doc = mesh.consul_client().kv_get_json(KV_SERVICES_PREFIX + service)
    return ServicePolicy() if doc is None else ServicePolicy.from_json(doc, where=f"kv {service}")


def baseline(mesh: Any, service: str) -> ServicePolicy:
    return mesh.topology.services[service].policy


def restore(mesh: Any, service: str, deadline: float = RESTORE_DEADLINE_S) -> Applied:
    """Put the topology's baseline policy back and wait (up to ``deadline``) until every subscriber shows it."""
    return apply(mesh, service, baseline(mesh, service), deadline, endpoints=True)


@contextlib.contextmanager
def applied(mesh: Any, service: str, policy: ServicePolicy, check: Any = None,
            deadline: float = POLICY_DEADLINE_S, endpoints: bool = True) -> Iterator[Applied]:
    """``with applied(mesh, "backend", pol, check) as a:`` -- judged as policy_apply_*; baseline restored on exit.

    A policy the mesh's flavour cannot express skips the check with the reason (never a silent pass).
    """
    skip_unless_expressible(mesh, service, policy)
    try:
        a = apply(mesh, service, policy, deadline, endpoints)
        if check is not None:
            check.policy_applied(a.per_envoy_s, deadline, {"service": service, "policy": a.policy,
                                                           "endpoints_s": a.endpoints_s,
                                                           "never_shown": a.to_json()["never_shown"]})
        yield a
    finally:
        restore(mesh, service)


# -- the mesh-wide policy (edge sampling) -------------------------------------

def apply_mesh(mesh: Any, policy: MeshPolicy, deadline: float = POLICY_DEADLINE_S) -> Applied:
    """Hand the mesh policy to the control plane; measure when the ingress Envoy shows it."""
    t0 = time.monotonic()
    flavour.of(mesh).put_mesh_policy(mesh, policy)
    url = mesh.envoys["ingress"].url("admin")
    per, last = _wait_all({"ingress": lambda: contract.mesh_facts(_view(url), policy)}, t0, deadline,
                          f"the ingress to sample {policy.sampling_percent:g} % of new traces")
    a = Applied("mesh", policy.to_json(), per, deadline_s=deadline, last_seen=last)
    a.elapsed_s = time.monotonic() - t0
    return a


@contextlib.contextmanager
def mesh_applied(mesh: Any, policy: MeshPolicy, check: Any = None,
                 deadline: float = POLICY_DEADLINE_S) -> Iterator[Applied]:
    _skip(flavour.of(mesh).mesh_unsupported(policy))
    try:
        a = apply_mesh(mesh, policy, deadline)
        if check is not None:
            check.policy_applied(a.per_envoy_s, deadline, {"service": "mesh", "policy": a.policy,
                                                           "never_shown": a.to_json()["never_shown"]})
        yield a
    finally:
        apply_mesh(mesh, mesh.topology.mesh, RESTORE_DEADLINE_S)
