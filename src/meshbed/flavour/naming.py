"""How each flavour names an upstream's Envoy clusters (a leaf module: no meshbed imports).

builtin/go name a service's EDS cluster after the service (``backend``).
Consul Connect names it after the discovery-chain target:
``[<subset>.]<service>.<namespace>.<datacenter>.internal.<trust-domain>.consul``
(``v2.backend.default.dc1.internal.9b9c...consul``). Readers of ``/clusters``
ask :func:`service_of_cluster` which service a cluster serves, so a question
like "which hosts does this Envoy list for backend?" has one answer whatever
the flavour.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")

_CONNECT = re.compile(r"^(?:(?P<subset>[A-Za-z0-9_-]+)\.)?(?P<service>[a-z0-9][a-z0-9-]*)\.(?P<ns>[a-z0-9-]+)\."
                      r"(?P<dc>[A-Za-z0-9_-]+)\.internal(?:-v1)?\.(?P<td>[A-Za-z0-9-]+)\.consul$")


def connect_parts(cluster: str) -> dict[str, str] | None:
    """The parts of a Consul Connect cluster name (service, subset, ns, dc, td); None for any other name."""
    m = _CONNECT.match(cluster)
    if not m or m.group("ns") != "default":
        return None
    return {k: v or "" for k, v in m.groupdict().items()}


def service_of_cluster(cluster: str) -> str:
    """The service a cluster serves: the Connect target's service, else the name itself."""
    p = connect_parts(cluster)
    return p["service"] if p else cluster


def subset_of_cluster(cluster: str) -> str:
    """The Connect subset of a cluster ('' for none, and for every non-Connect name)."""
    p = connect_parts(cluster)
    return p["subset"] if p else ""


def by_service(clusters: Mapping[str, list[T]]) -> dict[str, list[T]]:
    """``clusters`` plus, for every service only reachable under Connect names, the union of their hosts.

    The original names stay (route targets name them); a service key is added only when no cluster
    already has that exact name, so builtin/go output is returned unchanged.
    """
    out: dict[str, list[T]] = dict(clusters)
    extra: dict[str, list[T]] = {}
    for name, hosts in clusters.items():
        svc = service_of_cluster(name)
        if svc != name and svc not in clusters:
            extra.setdefault(svc, []).extend(hosts)
    out.update(extra)
    return out


def names_for(service: str, names: Iterable[str]) -> list[str]:
    """Every cluster in ``names`` that serves ``service``."""
    return [n for n in names if service_of_cluster(n) == service]
