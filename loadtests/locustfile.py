"""meshbed's Locust load: GETs through the ingress, each with a UUID x-request-id.

Run by meshbed.load as a headless subprocess (gevent stays out of pytest).
Settings come from the environment:
  MESHBED_SHAPE        steady | ramp | spike          (default steady)
  MESHBED_USERS        users at the plateau            (default 10)
  MESHBED_USER_RPS     requests/s per user             (default 4)
  MESHBED_DURATION_S   total seconds                   (default 30)
  MESHBED_PATH         request path                    (default /)
  MESHBED_REQUEST_LOG  CSV file: one line per request  (optional)
Every request is logged as: unix_ts,request_id,status,latency_ms,instances
(instances: every x-meshbed instance in the answer, first hop first, '|'-joined)
so checks can match requests to traces and to the instances that served them.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task

PATH = os.environ.get("MESHBED_PATH", "/")
USERS = int(os.environ.get("MESHBED_USERS", "10"))
USER_RPS = float(os.environ.get("MESHBED_USER_RPS", "4"))
DURATION = float(os.environ.get("MESHBED_DURATION_S", "30"))
SHAPE = os.environ.get("MESHBED_SHAPE", "steady")
LOG_PATH = os.environ.get("MESHBED_REQUEST_LOG", "")
_log = open(LOG_PATH, "a", buffering=1) if LOG_PATH else None  # line-buffered: LoadRun.wait_started polls the file size


def _instances(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    out = []
    stack = [doc] if isinstance(doc, dict) else []
    while stack:
        d = stack.pop(0)
        if d.get("instance"):
            out.append(str(d["instance"]))
        stack.extend(x for x in d.get("downstream", []) if isinstance(x, dict))
    return "|".join(out)


class MeshUser(FastHttpUser):
    wait_time = constant_throughput(USER_RPS)
    # a reset or timeout must not stall a user for long
    network_timeout = 10.0
    connection_timeout = 5.0

    @task
    def get(self) -> None:
        rid = str(uuid.uuid4())
        t0 = time.time()
        with self.client.get(PATH, headers={"x-request-id": rid}, name=PATH, catch_response=True) as r:
            status = r.status_code or 0
            if status != 200:
                r.failure(f"HTTP {status}")
            if _log is not None:
                _log.write(f"{t0:.6f},{rid},{status},{(time.time() - t0) * 1000:.3f},{_instances(r.content or b'')}\n")


class MeshbedShape(LoadTestShape):
    """steady: USERS for DURATION; ramp: 1 -> USERS linearly; spike: USERS, 3x in the middle fifth."""

    def tick(self):  # type: ignore[override]
        t = self.get_run_time()
        if t >= DURATION:
            return None
        if SHAPE == "ramp":
            return max(1, round(USERS * t / DURATION)), max(1, USERS)
        if SHAPE == "spike":
            spike = 0.4 * DURATION <= t < 0.6 * DURATION
            return (USERS * 3 if spike else USERS), USERS * 3
        return USERS, USERS


@events.quitting.add_listener
def _flush(environment, **kw) -> None:  # noqa: ANN001
    if _log is not None:
        _log.flush()
