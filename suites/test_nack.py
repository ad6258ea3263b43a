"""DISC-9: the control plane sends a config Envoy rejects (a NACK), then a valid one.

Setup: the Envoys that route to an upstream (the check's ``target``, found from the topology by
meshbed.roles; ``backend`` on examples/basic.yaml). Apply: the mesh's flavour makes its control
plane send config Envoy rejects (``Flavour.nack_trigger``: for builtin/go a policy that is
valid meshbed input but that Envoy's validation refuses, ``outlier_detection.max_ejection_percent``
150; for consul-connect Consul's documented ring-size case), then a valid policy through
:mod:`meshbed.policy_control`. Measure: every Envoy's ``update_rejected`` counters (the NACK),
the time until each shows the valid policy (the contract, on its own config dump), its
``server.uptime`` (recovered, not restarted) and what clients get afterwards. The baseline
policy is restored on exit.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from meshbed import flavour, policy_control, scenario, wait
from meshbed.errors import WaitTimeout
from meshbed.measure import nack
from meshbed.observe import discovery_helpers as dh
from meshbed.observe import envoy_admin
from meshbed.roles import Upstream
from meshbed.traffic import drive

pytestmark = [pytest.mark.discovery, pytest.mark.integration]

CLIENT = "client (traffic.drive)"


def _uptimes(urls: dict[str, str]) -> dict[str, int]:
    return {n: envoy_admin.stats(u, r"^server\.uptime$").get("server.uptime", 0) for n, u in urls.items()}


def _wait_rejected(urls: dict[str, str], before: dict[str, dict[str, int]], deadline: float) -> dict[str, int]:
    """Per Envoy, rejections counted since ``before``, once every Envoy has one (or at the deadline)."""
    seen: dict[str, int] = {}

    def probe() -> bool:
        seen.update(dh.rejected_delta(before, dh.rejected_updates(urls)))
        if not all(v > 0 for v in seen.values()):
            raise wait.NotYet(f"rejections so far: {seen}")
        return True

    try:
        wait.until(probe, deadline, interval=0.05, what="every subscriber to reject the bad config")
    except WaitTimeout:
        pass  # a measured absence: nack_seen counts the Envoys that did
    return seen


@pytest.mark.quick
@pytest.mark.check("DISC-9")
@pytest.mark.needs_topology(Upstream())
def test_disc9_nack_then_valid_policy(mesh, check, target):
    """A config Envoy rejects, then a valid policy: every Envoy serves the valid one, unrestarted."""
    p, svc = check.p, target.service
    urls = scenario.subscriber_urls(mesh, svc)
    base = policy_control.baseline(mesh, svc)
    valid = dataclasses.replace(base, lb_policy="LEAST_REQUEST", timeout_ms=p.valid_timeout_ms)
    policy_control.skip_unless_expressible(mesh, svc, valid)
    up0, rej0 = _uptimes(urls), dh.rejected_updates(urls)
    try:
        t0 = time.time()
        trigger = flavour.of(mesh).nack_trigger(mesh, svc, base)
        rejected = _wait_rejected(urls, rej0, p.nack_deadline_s)
        t_nack = time.time()
        applied = policy_control.apply(mesh, svc, valid, deadline=p.deadline_s)
        batch = drive(mesh.ingress_url, p.requests, concurrency=4, timeout=10)
        up1 = _uptimes(urls)
    finally:
        restored = policy_control.restore(mesh, svc)
    m = nack.recovery(rejected, applied.per_envoy_s, p.deadline_s, up0, up1)
    ok, n = nack.ok_pct([a.status for a in batch.answers])
    check.evidence("trigger", {**trigger, "nack_wait_s": round(t_nack - t0, 3), "rejected_per_envoy": rejected})
    check.evidence("valid_policy", applied.to_json())
    check.evidence("uptime_s", {"before": up0, "after": up1, "restarted": m.restarted})
    check.evidence("answers", batch.by_status())
    check.evidence("restore", restored.to_json())
    if m.nack_seen == 0:
        pytest.skip("no Envoy rejected the trigger: the control plane validated it away (nothing to recover "
                    f"from); trigger: {trigger.get('why_envoy_rejects', trigger)}")
    check.figure("nack_seen", m.nack_seen, "envoys", len(urls), "envoy stats *.update_rejected", min_n=len(urls))
    check.figure("recovery_p99", m.recovery_p99, "s", m.n,
                 "valid policy written -> contract shown in each Envoy's /config_dump", min_n=len(urls),
                 envoys={k: (p.deadline_s if v is None else v) for k, v in applied.per_envoy_s.items()})
    check.figure("restarted", len(m.restarted), "envoys", len(urls), "envoy stats server.uptime", bad_count=True)
    check.figure("requests_ok_after", ok, "%", n, CLIENT, min_n=p.requests)
    check.judge()
