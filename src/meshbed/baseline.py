"""Return a running mesh to its baseline, and prove it is there.

Tests undo their own changes; this is the safety net between tests (and the
measurement at the end of a session that nothing was left behind): no toxic,
every proxy enabled, nothing paused, no scaled-up instance, and Consul
listing exactly the topology's instances, all passing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import wait
from .errors import ComponentError, ConfigError
from .policy import KV_MESH_KEY, KV_SERVICES_PREFIX, MeshPolicy, ServicePolicy

if TYPE_CHECKING:
    from .mesh import Mesh


def leftovers(mesh: "Mesh") -> dict[str, Any]:
    """What differs from the baseline right now (all empty lists: clean)."""
    tp = mesh.toxiproxy_client()
    proxies = tp.proxies()
    toxics = [f"{name}:{t['name']}" for name, p in proxies.items() for t in p.get("toxics", [])]
    disabled = [name for name, p in proxies.items() if not p.get("enabled", True)]
    cc = mesh.consul_client()
    # bring-up wrote every policy key: a missing, unreadable or different one is a leftover
    wanted: dict[str, tuple[Any, Any]] = {KV_SERVICES_PREFIX + svc: (ServicePolicy.from_json, spec.policy)
                                          for svc, spec in mesh.topology.services.items()}
    wanted[KV_MESH_KEY] = (MeshPolicy.from_json, mesh.topology.mesh)
    changed_policies = []
    for key, (parse, want) in wanted.items():
        doc = cc.kv_get_json(key)
        try:
            now = None if doc is None else parse(doc)
        except ConfigError:
            now = None
        if now != want:
            changed_policies.append(key.removeprefix(KV_SERVICES_PREFIX))
    expected = set(mesh.instances)
    registered: dict[str, str] = {}
    for svc in mesh.topology.services:
        for inst in cc.instances(svc):
            registered[inst.id] = inst.status
    return {
        "toxics": sorted(toxics),
        "disabled_proxies": sorted(disabled),
        "extra_instances": sorted(mesh.extra),
        "extra_registrations": sorted(set(registered) - expected),
        "missing_registrations": sorted(expected - set(registered)),
        "not_passing": sorted(i for i, st in registered.items() if st != "passing" and i in expected),
        "dead_components": sorted(h.name for h in mesh.all_handles() if not h.alive()),
        "changed_policies": sorted(changed_policies),
    }


def reset(mesh: "Mesh", deadline: float = 20.0) -> None:
    """Undo whatever a test left: resume, remove toxics, re-register and heal instances, drop extras."""
    for inst in list(mesh.extra):
        mesh.scale.remove_instance(inst)
    for h in mesh.all_handles():
        h.resume()
    mesh.toxiproxy_client().reset()
    if mesh.consul_gate is not None:
        from .components.consul_gate import set_abort_percent
        set_abort_percent(mesh.consul_gate, 0)
    dead = [h.name for h in mesh.all_handles() if not h.alive()]
    if dead:
        raise ComponentError(f"components died and were not restarted by the test: {', '.join(dead)}",
                             hint="a test that kills a component must restart it")
    left = leftovers(mesh)
    if left["changed_policies"]:
        from .policy_control import restore
        for svc in left["changed_policies"]:
            if svc == KV_MESH_KEY:
                mesh.consul_client().kv_put(KV_MESH_KEY, mesh.topology.mesh.to_json())
            else:
                restore(mesh, svc, deadline)
    if left["missing_registrations"] or left["not_passing"] or left["extra_registrations"]:
        cc = mesh.consul_client()
        for inst in left["extra_registrations"]:
            cc.deregister(inst)
        for inst in set(left["missing_registrations"]) | set(left["not_passing"]):
            mesh.control(inst, "/meshbed/health", {"healthy": True})
            mesh.control(inst, "/meshbed/register")
            cc.maintenance(inst, False)

        def clean() -> object:
            now = leftovers(mesh)
            bad = {k: v for k, v in now.items() if v}
            if bad:
                raise wait.NotYet(str(bad))
            return True

        wait.until(clean, deadline, interval=0.1, what="the mesh to return to its baseline",
                   hint="a test left registrations or health changed and they did not heal")
