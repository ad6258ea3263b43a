"""Which services of a topology a check works on, found from the parsed topology instead of by name.

A check declares what it needs (``@pytest.mark.needs_topology(roles.Upstream(min_instances=3))``).
The plugin resolves the need against the configured topology at collection time: when no
service fits, the check is skipped with the reason before any mesh comes up. In the test,
the ``target`` fixture is the same resolution against the running mesh's topology.

Every check drives requests to ``/`` through the ingress, so every need starts from the
*edge*: the service the ingress routes ``/`` to. Candidates are then visited in call order
from the edge (breadth first), and the first that fits wins: on ``examples/basic.yaml``
every upstream need is ``backend`` called by ``frontend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from .topology import Topology

PATH = "/"  # the path every check drives through the ingress


class Unfit(Exception):
    """The topology cannot host a need; ``str()`` is the reason shown for the skipped check."""


@dataclass(frozen=True)
class Target:
    """What a check works on: ``service`` (an upstream, or the edge itself), who calls it, and the edge."""

    service: str
    callers: tuple[str, ...]  # services (not the ingress) whose sidecars route to ``service``
    edge: str  # the service the ingress routes / to
    chain: tuple[str, ...]  # edge -> ... -> service, the calls a request to / takes to reach it

    @property
    def caller(self) -> str:
        """The first caller on the way from the edge ('ingress' when the service is the edge)."""
        return self.chain[-2] if len(self.chain) > 1 else "ingress"


class Need(Protocol):
    def resolve(self, topo: Topology) -> Target: ...

    def describe(self) -> str: ...


def edge(topo: Topology, path: str = PATH) -> str:
    """The service the ingress Envoy routes ``path`` to: the first route whose prefix matches (file order,
    as Envoy matches), or Unfit."""
    for r in topo.ingress:
        if path.startswith(r.prefix):
            return r.service
    raise Unfit(f"the ingress routes no service for {path!r} (routes: {', '.join(r.prefix for r in topo.ingress)}); "
                f"checks send their requests to {path!r}")


def reachable(topo: Topology, start: str) -> list[tuple[str, ...]]:
    """Every service a request reaching ``start`` goes on to, breadth first in ``calls`` order, each with
    its call chain from ``start`` (``start`` itself first)."""
    seen, out, queue = {start}, [(start,)], [(start,)]
    while queue:
        chain = queue.pop(0)
        for c in topo.services[chain[-1]].calls:
            if c not in seen:
                seen.add(c)
                out.append(chain + (c,))
                queue.append(chain + (c,))
    return out


def _callers(topo: Topology, service: str) -> tuple[str, ...]:
    return tuple(c for c in topo.callers_of(service) if c != "ingress")


def _missing_links(topo: Topology, links: Iterable[str]) -> list[str]:
    return sorted(set(links) - set(topo.chaos_links))


def _summary(topo: Topology) -> str:
    """'web x2 -> [api]' style, for a reason line."""
    def one(s: Any) -> str:
        extra = []
        versions = sorted({i.version for i in s.instances})
        prios = sorted({i.priority for i in s.instances})
        if len(versions) > 1:
            extra.append("versions " + "/".join(versions))
        if len(prios) > 1:
            extra.append("priorities " + "/".join(map(str, prios)))
        calls = f" -> {','.join(s.calls)}" if s.calls else ""
        return f"{s.name} x{s.replicas}{' (' + ', '.join(extra) + ')' if extra else ''}{calls}"
    return "; ".join(one(s) for s in topo.services.values())


@dataclass(frozen=True)
class Edge:
    """The edge service itself (the one behind the ingress route for /)."""

    min_instances: int = 1
    links: tuple[str, ...] = ()  # chaos.links the check faults

    def describe(self) -> str:
        parts = ["the service behind the ingress route for /"]
        if self.min_instances > 1:
            parts.append(f"with >= {self.min_instances} instances")
        if self.links:
            parts.append(f"and chaos.links {', '.join(self.links)}")
        return " ".join(parts)

    def resolve(self, topo: Topology) -> Target:
        e = edge(topo)
        missing = _missing_links(topo, self.links)
        if missing:
            raise Unfit(f"needs chaos.links {', '.join(missing)} (Toxiproxy on those links) in the topology")
        if topo.services[e].replicas < self.min_instances:
            raise Unfit(f"needs {self.describe()}; {e} has {topo.services[e].replicas}")
        return Target(e, (), e, (e,))


@dataclass(frozen=True)
class Upstream:
    """A service some other service calls, on the way of a request to / (an upstream and its callers).

    - ``min_instances``: the upstream has at least this many instances taking traffic at baseline
      (at its best priority);
    - ``all_serving``: every instance takes traffic at baseline (one priority);
    - ``caller_min_instances``: its nearest caller on the way from the edge has at least this many;
    - ``from_edge``: it is the edge's first call, so the first ``downstream`` entry of an answer's
      body names the instance that served it (checks that read the served instance from answers);
    - ``links``: chaos.links the check faults;
    - ``prefer``: among the fits, first those whose instances already span ``versions`` or
      ``priorities`` (the check uses them instead of adding instances).
    """

    min_instances: int = 1
    all_serving: bool = True
    caller_min_instances: int = 1
    from_edge: bool = False
    links: tuple[str, ...] = ()
    prefer: str = ""  # "" | versions | priorities

    def __post_init__(self) -> None:
        if self.prefer not in ("", "versions", "priorities"):
            raise ValueError(f"Upstream(prefer={self.prefer!r}): one of '', 'versions', 'priorities'")

    def describe(self) -> str:
        parts = ["an upstream reached from the ingress route for /"]
        if self.from_edge:
            parts = ["the first service the edge service calls"]
        if self.min_instances > 1:
            parts.append(f"with >= {self.min_instances} instances" + ("" if self.all_serving else " at its best priority"))
        if self.all_serving:
            parts.append("all at one priority" if self.min_instances > 1 else "at one priority")
        if self.caller_min_instances > 1:
            parts.append(f"whose caller has >= {self.caller_min_instances} instances")
        if self.links:
            parts.append(f"and chaos.links {', '.join(self.links)}")
        return " ".join(parts)

    def fits(self, topo: Topology, chain: tuple[str, ...]) -> bool:
        s = topo.services[chain[-1]]
        best = min(i.priority for i in s.instances)
        return (len(chain) > 1 and sum(i.priority == best for i in s.instances) >= self.min_instances
                and (not self.all_serving or len({i.priority for i in s.instances}) == 1)
                and topo.services[chain[-2]].replicas >= self.caller_min_instances
                and (not self.from_edge or (len(chain) == 2 and topo.services[chain[0]].calls[0] == chain[1])))

    def _preferred(self, topo: Topology, chain: tuple[str, ...]) -> bool:
        insts = topo.services[chain[-1]].instances
        if self.prefer == "versions":
            return len({i.version for i in insts}) > 1
        if self.prefer == "priorities":
            return len({i.priority for i in insts}) > 1
        return False

    def resolve(self, topo: Topology) -> Target:
        e = edge(topo)
        missing = _missing_links(topo, self.links)
        if missing:
            raise Unfit(f"needs chaos.links {', '.join(missing)} (Toxiproxy on those links) in the topology")
        fit = [c for c in reachable(topo, e) if self.fits(topo, c)]
        if not fit:
            raise Unfit(f"needs {self.describe()}; topology {topo.name!r} has none ({_summary(topo)})")
        chain = sorted(fit, key=lambda c: not self._preferred(topo, c))[0]  # stable: call order otherwise
        return Target(chain[-1], _callers(topo, chain[-1]), e, chain)


def resolve(need: Need, topo: Topology) -> Target:
    """The target of ``need`` in ``topo``; Unfit (with the reason) when the topology cannot host it."""
    return need.resolve(topo)


def unmet(needs: Iterable[Need], topo: Topology) -> str | None:
    """Why ``topo`` cannot host a check with these needs (the skip reason), or None when it can."""
    for n in needs:
        try:
            n.resolve(topo)
        except Unfit as exc:
            return f"topology {topo.name!r} cannot host this check: {exc}"
    return None


def primaries(topo: Topology, service: str) -> tuple[list[str], list[str]]:
    """(instances at the service's best priority, the others): the failover split a topology declares."""
    insts = topo.services[service].instances
    best = min(i.priority for i in insts)
    return [i.id for i in insts if i.priority == best], [i.id for i in insts if i.priority != best]


__all__ = ["Edge", "Need", "Target", "Unfit", "Upstream", "edge", "primaries", "reachable", "resolve", "unmet"]
