"""What several checks do to a running mesh and read back from it: shared setup, apply and measure steps.

- setup: the admin URLs of the Envoys a check watches (``subscriber_urls``, ``watched``);
- apply: changes that undo themselves -- instances withdrawn from Consul (``withdrawn``),
  a health flip (``health_flipped``), a churn storm (``churned``), one fault on several
  Toxiproxy links at once (``link_faults``);
- measure: waits that must hold on every Envoy (``everywhere``), Consul's view
  (``consul_shows``), the reference control plane's push log (``push_log``), and one
  DISC-5/6 round (``withdraw_around``).

Figures are computed from what these return by :mod:`meshbed.measure`.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ContextManager, Iterable, Iterator, Mapping

from . import wait
from .chaos import faults
from .chaos.churn import Churn, ChurnEvent
from .chaos.toxiproxy import ToxiproxyClient
from .errors import WaitTimeout
from .measure import discovery as dm
from .observe import convergence
from .observe import discovery_helpers as dh
from .observe.consul import ConsulClient

# -- setup: which Envoys ----------------------------------------------------------


def admin_urls(handles: Mapping[str, Any]) -> dict[str, str]:
    """Envoy name -> its admin URL."""
    return {n: h.url("admin") for n, h in handles.items()}


def subscriber_urls(mesh: Any, service: str) -> dict[str, str]:
    """The admin URLs of the Envoys that route to ``service``."""
    return admin_urls(mesh.subscribers(service))


def envoy_urls(mesh: Any) -> dict[str, str]:
    """The admin URLs of every Envoy of the mesh (sidecars and ingress)."""
    return admin_urls(mesh.envoys)


@dataclass(frozen=True)
class Watched:
    """The Envoys that subscribe to any service, and which services each one does."""

    services: dict[str, tuple[str, ...]]  # Envoy -> the services it routes to
    admin: dict[str, str]  # Envoy -> admin URL

    def poller(self, interval: float = 0.02) -> dh.EndpointPoller:
        """A background poller of their endpoint sets (a context manager)."""
        return dh.EndpointPoller(self.admin, self.services, interval=interval)

    def baseline(self, poller: dh.EndpointPoller, deadline: float = 5.0) -> dict[str, dict[str, dh.Endpoints]]:
        """Every Envoy's endpoint sets, read now; returns once ``poller`` has caught up with them
        (or a sample taken just before a previous restore would look like a lost config)."""
        base = {n: dh.envoy_endpoints(u, self.services[n]) for n, u in self.admin.items()}
        wait.until(lambda: all(poller.state_at(n, time.time()) == base[n] for n in self.admin), deadline,
                   interval=0.02, what="the endpoint poller to see the baseline")
        return base


def watched(mesh: Any) -> Watched:
    services: dict[str, list[str]] = {}
    for svc in mesh.topology.services:
        for node in mesh.subscribers(svc):
            services.setdefault(node, []).append(svc)
    return Watched({n: tuple(s) for n, s in services.items()},
                   {n: u for n, u in envoy_urls(mesh).items() if n in services})


# -- measure: the push log, Consul, every Envoy -----------------------------------


def push_log(mesh: Any, since: float, event: str | None = None, type_: str | None = None) -> list[dict[str, Any]]:
    """The reference control plane's push log since ``since``; [] for another control plane."""
    return dh.cp_events(mesh.cp_debug_url, since, event=event, type_=type_)


def first_sent(mesh: Any, t0: float) -> dict[str, float]:
    """Per node: seconds from ``t0`` until the control plane first sent it config (evidence)."""
    return dm.first_per_node(push_log(mesh, t0, event="sent"), t0)


def eds_acks(mesh: Any, t0: float) -> dict[str, float]:
    """Per node: seconds from ``t0`` until the control plane saw its first EDS ACK (evidence)."""
    return dm.first_per_node(push_log(mesh, t0, event="ack", type_="EDS"), t0)


def everywhere(admin: Mapping[str, str], expect: convergence.Expectation, deadline: float, what: str,
               t0: float | None = None) -> dict[str, float]:
    """Per Envoy, seconds until ``expect`` held; a WaitTimeout when it did not on every Envoy by the deadline."""
    times = convergence.converge_times(dict(admin), expect, time.time() if t0 is None else t0, deadline)
    never = sorted(n for n, v in times.items() if v is None)
    if never:
        raise WaitTimeout(f"{what}: not by {deadline} s on {never}",
                          hint="the mesh did not get back to its baseline; see the control plane's log")
    return {n: float(v) for n, v in times.items() if v is not None}


def consul_shows(consul: ConsulClient, service: str, instances: Iterable[str], status: str,
                 deadline: float = 10.0, interval: float = 0.01) -> float:
    """Wall-clock time of the first poll where Consul reports every one of ``instances`` with ``status``."""
    want = sorted(instances)

    def probe() -> bool:
        st = {i.id: i.status for i in consul.instances(service)}
        bad = [i for i in want if st.get(i) != status]
        if bad:
            raise wait.NotYet(f"consul status of {bad}: {[st.get(i) for i in bad]}")
        return True

    return wait.until(probe, deadline, interval=interval, clock=time.time,
                      what=f"consul to report {want} {status}").first_ok_at


# -- apply: changes that undo themselves ------------------------------------------


def set_health(mesh: Any, instances: Iterable[str], healthy: bool) -> None:
    """Each instance passes (or fails) its own HTTP health check from now on."""
    for i in instances:
        mesh.control(i, "/meshbed/health", {"healthy": healthy})


@dataclass
class Withdrawn:
    """Instances deregistered from Consul (by themselves) inside a :func:`withdrawn` block."""

    mesh: Any
    instances: list[str] = field(default_factory=list)

    def deregister(self, inst: str) -> float:
        """Deregister ``inst`` now; returns the wall-clock time just before the call."""
        t = time.time()
        self.instances.append(inst)  # first: a call that fails half-way is still undone
        self.mesh.control(inst, "/meshbed/deregister")
        return t


@contextlib.contextmanager
def withdrawn(mesh: Any, deadline: float) -> Iterator[Withdrawn]:
    """Instances deregistered in the block register again on exit; when the block ended normally,
    each must then be back in every subscriber of its service by ``deadline`` (else WaitTimeout)."""
    w = Withdrawn(mesh)
    try:
        yield w
    finally:
        for inst in w.instances:
            mesh.control(inst, "/meshbed/register")
    for inst in w.instances:
        svc = mesh.instances[inst].service
        everywhere(subscriber_urls(mesh, svc), convergence.has_host(svc, mesh.advertised[inst]), deadline,
                   f"restore: {inst} back in every subscriber")


@dataclass
class HealthFlip:
    """One instance critical in Consul until :meth:`back`: by ``maintenance`` mode or by failing
    its own ``app`` health check (then the time is the first Consul poll that shows the status)."""

    mesh: Any
    consul: ConsulClient
    instance: str
    method: str  # maintenance | app
    reason: str = "meshbed"  # for maintenance mode
    t_critical: float = 0.0
    t_passing: float | None = None

    def set(self, healthy: bool) -> float:
        if self.method == "maintenance":
            t = time.time()
            self.consul.maintenance(self.instance, not healthy, reason=self.reason)
            return t
        set_health(self.mesh, [self.instance], healthy)
        return consul_shows(self.consul, self.mesh.instances[self.instance].service, [self.instance],
                            "passing" if healthy else "critical")

    def back(self) -> float:
        """Passing again; returns when Consul has it so."""
        self.t_passing = self.set(True)
        return self.t_passing


@contextlib.contextmanager
def health_flipped(mesh: Any, consul: ConsulClient, inst: str, method: str,
                   reason: str = "meshbed") -> Iterator[HealthFlip]:
    """``inst`` critical for the block (t_critical set); left passing both ways if the block did not flip it back."""
    f = HealthFlip(mesh, consul, inst, method, reason)
    try:
        f.t_critical = f.set(False)
        yield f
    finally:
        if f.t_passing is None:
            consul.maintenance(inst, False)
            set_health(mesh, [inst], True)


@contextlib.contextmanager
def churned(mesh: Any, services: Iterable[str], rate: float, duration: float,
            include_health: bool = False) -> Iterator[list[ChurnEvent]]:
    """A churn storm over every instance of ``services`` (one Churn each, never below one instance,
    the rate split by instance count); the block runs after its last event, every instance is restored on exit."""
    pools = [mesh.instances_of(s) for s in services]
    total = sum(len(p) for p in pools)
    churns = [Churn(mesh, insts, rate * len(insts) / total, duration, seed=i + 1, keep_at_least=1)
              for i, insts in enumerate(pools)]
    try:
        with ThreadPoolExecutor(len(churns)) as pool:
            for f in [pool.submit(c.run, include_health) for c in churns]:
                f.result()
        yield sorted((e for c in churns for e in c.events), key=lambda e: e.ts)
    finally:
        for c in churns:
            c.restore()


LINK_FAULTS = ("down", "reset_peer", "timeout", "latency")


def link_faults(toxi: ToxiproxyClient, proxies: Iterable[str], kind: str, log: faults.FaultLog, *,
                latency_ms: int = 500, timeout_ms: int = 0) -> ContextManager[Any]:
    """One fault on every proxy at once (a toxic in both directions, or the link down), undone on exit."""
    def one(p: str, stream: str) -> ContextManager[Any]:
        if kind == "reset_peer":
            return faults.reset_peer(toxi, p, stream=stream, log=log)
        if kind == "timeout":
            return faults.timeout(toxi, p, timeout_ms, stream=stream, log=log)
        return faults.latency(toxi, p, latency_ms, stream=stream, log=log)

    if kind not in LINK_FAULTS:
        raise ValueError(f"unknown link fault {kind!r}; known: {', '.join(LINK_FAULTS)}")
    if kind == "down":
        return faults.all_of(*(faults.link_down(toxi, p, log=log) for p in proxies))
    return faults.all_of(*(one(p, s) for p in proxies for s in ("downstream", "upstream")))


# -- DISC-5 / DISC-6: one round ---------------------------------------------------


def withdraw_around(mesh: Any, w: Watched, poller: dh.EndpointPoller, kind: str, fault: ContextManager[Any],
                    inst: str, *, hold_s: float, deadline: float, change_after_s: float | None = 0.5,
                    watch_s: float = 0.0, log_pushes: bool = False) -> dm.Withdrawal:
    """``fault`` for ``hold_s``; ``inst`` deregisters ``change_after_s`` into it (None: right after it);
    from the fault's end, per subscriber, until the change shows; ``watch_s`` more watched. Then the
    instance registers again and is back everywhere before this returns."""
    svc, addr = mesh.instances[inst].service, mesh.advertised[inst]
    base = w.baseline(poller)
    with withdrawn(mesh, deadline) as out:
        with fault:
            t_start = t_change = time.time()
            if change_after_s is not None:
                time.sleep(change_after_s)
                t_change = out.deregister(inst)
            time.sleep(max(0.0, t_start + hold_s - time.time()))
        t_end = time.time()
        if change_after_s is None:
            t_change = out.deregister(inst)
        conv = convergence.converge_times(subscriber_urls(mesh, svc), convergence.lacks_host(svc, addr), t_end,
                                          deadline)
        t_conv = time.time()
        time.sleep(watch_s)  # keep watching a little for a late push
        t_watch = time.time()
    pushes = {"cp_first_sent_after_end_s": first_sent(mesh, t_end),  # reconnect backoff, per Envoy
              "cp_events": push_log(mesh, t_start)[:40]} if log_pushes else {}
    return dm.Withdrawal(kind, inst, addr, base, t_start, t_change, t_end, t_conv, t_watch, conv, pushes)
