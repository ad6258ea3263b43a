"""Everything a test of your own needs, importable from one place (see docs/writing-tests.md).

The fixtures come from meshbed's pytest plugin (loaded once meshbed is
installed): ``mesh`` (a running mesh, reset before each test), ``check``
(a catalog check: figures, judged against the profile), ``consul``, ``toxi``,
``load`` (Locust; ``pip install 'meshbed[load]'``) and ``fault_log``.

This module re-exports the helpers the built-in suites use, under one name:

=============================  ==============================================================
drive traffic                  :func:`drive` (counted GETs, every answer), :class:`LoadRun` via the ``load`` fixture
wait / convergence             :func:`until`, :func:`converge_times` with :func:`has_host` / :func:`lacks_host` /
                               :func:`lacks_healthy_host`, :func:`wait_converged`, :func:`admin_urls`
apply a policy                 :func:`applied` (a context manager: applied, timed, restored), :class:`ServicePolicy`,
                               :func:`mesh_applied` with :class:`MeshPolicy`
deregister / register          :func:`deregistered` (a context manager), or ``mesh.control(instance, "/meshbed/deregister")``
inject a fault                 :func:`latency`, :func:`reset_peer`, :func:`timeout`, :func:`bandwidth`, :func:`link_down`
                               (Toxiproxy, on ``mesh.links["upstream"][instance]``), :func:`paused`, :func:`stopped`,
                               :func:`all_of`; each undoes itself and records its window in a :class:`FaultLog`
figures                        :func:`summarize` (p50/p95/p99 with n)
your own checks                :class:`CatalogEntry`, :func:`register` (in a ``meshbed_catalog.py``)
=============================  ==============================================================
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from . import httpc
from .chaos.faults import (FaultLog, all_of, bandwidth, latency, link_down, paused, reset_peer, stopped, timeout,
                           toxic)
from .checks.catalog import CatalogEntry, register
from .errors import ComponentError, ConfigError, MeshbedError, WaitTimeout
from .load import LoadResult, LoadRun
from .mesh import Mesh, expected_endpoints, wait_converged
from .observe.convergence import converge_times, first_true_times, has_host, lacks_healthy_host, lacks_host
from .observe.envoy_admin import clusters
from .policy import MeshPolicy, ServicePolicy
from .policy_control import applied, mesh_applied
from .stats import Summary, summarize
from .traffic import Answer, Batch, drive
from .wait import until

__all__ = [
    "Answer", "Batch", "CatalogEntry", "ComponentError", "ConfigError", "FaultLog", "LoadResult", "LoadRun", "Mesh",
    "MeshPolicy", "MeshbedError", "ServicePolicy", "Summary", "WaitTimeout", "admin_urls", "all_of", "applied",
    "bandwidth", "clusters", "converge_times", "deregistered", "drive", "expected_endpoints", "first_true_times",
    "has_host", "httpc", "lacks_healthy_host", "lacks_host", "latency", "link_down", "mesh_applied", "paused",
    "register", "reset_peer", "stopped", "summarize", "timeout", "toxic", "until", "wait_converged",
]


def admin_urls(mesh: Mesh, service: str) -> dict[str, str]:
    """The admin URL of every Envoy that routes to ``service`` (what :func:`converge_times` polls), by node name."""
    return {name: handle.url("admin") for name, handle in mesh.subscribers(service).items()}


@contextlib.contextmanager
def deregistered(mesh: Mesh, instance: str, log: FaultLog | None = None) -> Iterator[str]:
    """``instance`` deregisters itself from Consul for the block, and registers again on exit.

    Yields the address it was registered with (``host:port``, as Envoy lists it),
    for :func:`lacks_host` / :func:`has_host`. The ``mesh`` fixture re-registers
    it before the next test anyway if the block is left another way.
    """
    address = mesh.advertised[instance]
    window = log.window("deregister", instance) if log is not None else contextlib.nullcontext()
    with window:
        mesh.control(instance, "/meshbed/deregister")
        try:
            yield address
        finally:
            mesh.control(instance, "/meshbed/register")
