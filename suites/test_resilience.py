"""RES: resilience under faults (CONFORMANCE.md). Ground truth: what clients get back.

Policies are changed through meshbed.policy_control (Consul KV, then wait until
every subscriber Envoy's config_dump shows it) and always restored to the
topology's baseline on exit; faults undo themselves (meshbed.chaos.faults).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest

from meshbed import httpc, policy_control, wait
from meshbed.chaos import faults
from meshbed.policy import CircuitBreaker, Retries
from meshbed.stats import rate_pct, summarize
from meshbed.traffic import drive

pytestmark = [pytest.mark.resilience, pytest.mark.integration]


def _entry(mesh) -> str:
    return mesh.topology.ingress[0].service


def _proxies(mesh, service: str) -> dict[str, str]:
    """Toxiproxy proxy in front of each instance's sidecar, by instance."""
    links = mesh.links.get("upstream", {})
    out = {i: links[i] for i in mesh.instances_of(service) if i in links}
    if not out:
        pytest.skip("the topology does not route upstream links through Toxiproxy (chaos.links: upstream)")
    return out


@pytest.mark.quick
@pytest.mark.check("RES-2")
def test_res2_latency_above_route_timeout(mesh, check, toxi, fault_log):
    """A latency toxic above the route timeout: every answer a 504 at timeout (+ <= 100 ms), none hangs.

    The timeout is set on the route the client sees directly (ingress -> entry
    service), and the latency toxic sits on every link into the entry service's
    sidecars, so the answer the client gets *is* the timed-out hop's 504.
    """
    n = int(check.param("requests", 30))
    timeout_ms = int(check.param("route_timeout_ms", 500))
    latency_ms = int(check.param("latency_ms", 1500))
    if latency_ms <= timeout_ms:
        pytest.fail(f"RES-2 params: latency_ms {latency_ms} must exceed route_timeout_ms {timeout_ms}")
    svc = _entry(mesh)
    proxies = _proxies(mesh, svc)
    pol = dataclasses.replace(policy_control.baseline(mesh, svc), timeout_ms=timeout_ms)
    # a client-side bound well above the toxic: an answer that does not come by then has hung
    client_timeout_s = (latency_ms + 2000) / 1000.0
    with policy_control.applied(mesh, svc, pol) as applied:
        with _all_toxics(toxi, proxies.values(), lambda p: faults.latency(toxi, p, latency_ms, log=fault_log)):
            batch = drive(mesh.ingress_url, n, concurrency=4, timeout=client_timeout_s)
    lat_ms = [a.latency_s * 1000.0 for a in batch.answers]
    got504 = [a for a in batch.answers if a.status == 504]
    overshoot = [a.latency_s * 1000.0 - timeout_ms for a in got504]
    hung = [a for a in batch.answers if a.status == 0]
    check.figure("answered_504", rate_pct(len(got504), batch.n), "%", batch.n, "client (traffic.drive)", min_n=n)
    check.figure("timeout_overshoot_max", max(overshoot) if overshoot else None, "ms", len(overshoot),
                 "client (traffic.drive)", min_n=n)
    check.figure("hung", len(hung), "requests", batch.n, "client (traffic.drive)")
    check.evidence("policy", applied.to_json())
    check.evidence("answers", {"by_status": batch.by_status(), "latency_ms": summarize(lat_ms).to_json(),
                               "overshoot_ms": summarize(overshoot).to_json(),
                               "client_timeout_s": client_timeout_s,
                               "samples": [{"status": a.status, "ms": round(a.latency_s * 1000, 1),
                                            "body": a.body[:60].decode("utf-8", "replace"), "error": a.error}
                                           for a in batch.answers]})
    check.judge()


class _all_toxics:
    """Enter one fault context per proxy; exit them all (even when one fails to enter)."""

    def __init__(self, toxi, proxies, make) -> None:
        self.cms = [make(p) for p in proxies]
        self.entered: list = []

    def __enter__(self):
        try:
            for cm in self.cms:
                cm.__enter__()
                self.entered.append(cm)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        err = None
        for cm in reversed(self.entered):
            try:
                cm.__exit__(None, None, None)
            except Exception as e:  # noqa: BLE001 - undo the rest, then report
                err = err or e
        self.entered = []
        if err is not None:
            raise err
        return False
