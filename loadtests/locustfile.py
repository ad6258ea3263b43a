"""meshbed's Locust load: GETs through the ingress, each with a UUID x-request-id.

Run by meshbed.load as a headless subprocess (gevent stays out of pytest).
Settings come from the environment:
  MESHBED_SHAPE        steady | ramp | spike          (default steady)
  MESHBED_USERS        users at the plateau            (default 10)
  MESHBED_USER_RPS     requests/s per user             (default 4)
  MESHBED_DURATION_S   total seconds                   (default 30)
  MESHBED_PATH         request path                    (default /)
  MESHBED_REQUEST_LOG  CSV file: one row per request  (optional)

Every request Locust completes is recorded through its ``events.request`` hook
into the CSV, whose first row names the columns (:data:`COLUMNS`):
  ts          unix time the request was sent
  request_id  its x-request-id
  status      HTTP status (0: no answer)
  latency_ms  Locust's response time
  instances   every x-meshbed instance in the answer, first hop first, '|'-joined
  error       why Locust counted it as failed ('' when it did not)
so checks can match requests to traces and to the instances that served them.
meshbed.load reads the columns by name.
"""

from __future__ import annotations

import csv
import json
import os
import uuid

from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task

PATH = os.environ.get("MESHBED_PATH", "/")
USERS = int(os.environ.get("MESHBED_USERS", "10"))
USER_RPS = float(os.environ.get("MESHBED_USER_RPS", "4"))
DURATION = float(os.environ.get("MESHBED_DURATION_S", "30"))
SHAPE = os.environ.get("MESHBED_SHAPE", "steady")
LOG_PATH = os.environ.get("MESHBED_REQUEST_LOG", "")
COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances", "error")


def _open_log(path: str):  # noqa: ANN202
    """The CSV writer, its header written once (line-buffered: LoadRun.wait_started watches for the first row)."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    fh = open(path, "a", buffering=1, newline="")
    writer = csv.writer(fh)
    if new:
        writer.writerow(COLUMNS)
    return fh, writer


_log, _writer = _open_log(LOG_PATH) if LOG_PATH else (None, None)


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


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, context=None,  # noqa: ANN001
            exception=None, start_time=None, **kw) -> None:
    if _writer is None:
        return
    status = int(getattr(response, "status_code", 0) or 0)
    try:
        body = (response.content or b"") if response is not None else b""
    except Exception:  # noqa: BLE001 - a failed request may have no body to read
        body = b""
    _writer.writerow([f"{float(start_time or 0.0):.6f}", (context or {}).get("request_id", ""), status,
                      f"{float(response_time or 0.0):.3f}", _instances(body) if body else "",
                      "" if exception is None else f"{type(exception).__name__}: {exception}"[:200]])


class MeshUser(FastHttpUser):
    wait_time = constant_throughput(USER_RPS)
    # a reset or timeout must not stall a user for long
    network_timeout = 10.0
    connection_timeout = 5.0

    @task
    def get(self) -> None:
        rid = str(uuid.uuid4())
        with self.client.get(PATH, headers={"x-request-id": rid}, name=PATH, context={"request_id": rid},
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code or 0}")


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
