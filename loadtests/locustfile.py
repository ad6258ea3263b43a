"""meshbed's Locust load: GETs through the ingress, each with a UUID x-request-id.

A plain locustfile: ``-u/--users``, ``-r/--spawn-rate`` and ``-t/--run-time``
work exactly as in Locust, headless or in the web UI, single process or
``--master``/``--worker``. Each user sends its next request as soon as the last
one is answered (Locust's default), unless ``--meshbed-user-rps`` paces it.

meshbed's own arguments (``locust -f locustfile.py --help`` lists them; each
also reads the environment variable in brackets):

  --meshbed-shape steady|ramp|spike  [MESHBED_SHAPE]     a named load shape; only when
                                       given does a shape take over from -u/-r (default: none)
  --meshbed-user-rps R               [MESHBED_USER_RPS]  requests/s per user (default 0: unpaced)
  --meshbed-path /p                  [MESHBED_PATH]      request path (default /)

The shapes read -u (users U), -r (spawn rate) and -t (run time T) and stop at T:
  steady  U users for T
  ramp    from 1 to U users, linearly over T
  spike   U users, 3 x U in the middle fifth of T (0.4 T to 0.6 T)

docs/load.md has the headless run, the web UI against ``meshbed up`` and
distributed runs. meshbed.load runs this file for the conformance checks, as a
subprocess (gevent stays out of pytest), and sets one more variable:

  MESHBED_REQUEST_LOG  CSV file: one row per request this process sends (optional;
                       each worker of a distributed run gets its own)

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
import logging
import os
import uuid
from typing import Any

from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task

SHAPES = ("steady", "ramp", "spike")
LOG_PATH = os.environ.get("MESHBED_REQUEST_LOG", "")
COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances", "error")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any, **kw: Any) -> None:
    parser.add_argument("--meshbed-shape", choices=SHAPES, default=None, env_var="MESHBED_SHAPE",
                        include_in_web_ui=False,
                        help="a named load shape (steady, ramp, spike) driven by -u, -r and -t; "
                             "without it -u/-r/-t work as in any locustfile")
    parser.add_argument("--meshbed-user-rps", type=float, default=0.0, env_var="MESHBED_USER_RPS",
                        help="requests per second per user (0: each user sends as fast as answers come)")
    parser.add_argument("--meshbed-path", default="/", env_var="MESHBED_PATH", help="the path every request GETs")


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


def _option(environment: Any, name: str, default: Any) -> Any:
    """A parsed option (on a worker: as the master sent it with the spawn message)."""
    value = getattr(environment.parsed_options, name, None) if environment.parsed_options is not None else None
    return default if value is None else value


class MeshUser(FastHttpUser):
    # a reset or timeout must not stall a user for long
    network_timeout = 10.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        """Unpaced unless --meshbed-user-rps is given (then Locust's constant_throughput)."""
        rps = float(_option(self.environment, "meshbed_user_rps", 0.0))
        return constant_throughput(rps)(self) if rps > 0 else 0.0

    @task
    def get(self) -> None:
        path = str(_option(self.environment, "meshbed_path", "/"))
        rid = str(uuid.uuid4())
        with self.client.get(path, headers={"x-request-id": rid}, name=path, context={"request_id": rid},
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code or 0}")


class MeshbedShape(LoadTestShape):
    """A named shape over Locust's own -u (users), -r (spawn rate) and -t (run time).

    ``abstract``: Locust does not pick it up by itself; ``--meshbed-shape`` installs it.
    """

    abstract = True
    use_common_options = True  # the web UI keeps its users / spawn rate / run time fields: the shape reads them

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._warned = False

    def _opts(self) -> tuple[int, float | None, float | None]:
        env = self.runner.environment if self.runner is not None else None
        users = int(_option(env, "num_users", 1)) if env is not None else 1
        rate = _option(env, "spawn_rate", None) if env is not None else None
        run_time = _option(env, "run_time", None) if env is not None else None
        return max(1, users), (float(rate) if rate else None), (float(run_time) if run_time else None)

    def tick(self):  # type: ignore[override]  # noqa: ANN201
        users, rate, run_time = self._opts()
        t = self.get_run_time()
        if run_time is None:
            if self.name == "steady":
                return users, rate or users
            if not self._warned:
                logging.error("--meshbed-shape %s needs a run time (-t, or the web UI's run time field)", self.name)
                self._warned = True
            return None
        if t >= run_time:
            return None
        if self.name == "ramp":
            return max(1, round(users * t / run_time)), rate or users
        if self.name == "spike":
            spike = 0.4 * run_time <= t < 0.6 * run_time
            return (users * 3 if spike else users), rate or users * 3
        return users, rate or users


@events.init.add_listener
def _fresh_clock(environment: Any, **kw: Any) -> None:
    """-t exactly: Locust arms its run-time timer on gevent's cached loop clock, which start-up has left
    ~1-2 s stale (a 5 s run ended after 3.1-3.8 s); refresh it just before the timer is set."""
    import gevent
    gevent.get_hub().loop.update_now()


@events.init.add_listener
def _install_shape(environment: Any, runner: Any = None, **kw: Any) -> None:
    """--meshbed-shape chosen: the shape takes over (on the master, or the only process)."""
    name = _option(environment, "meshbed_shape", None)
    if not name or _option(environment, "worker", False):
        return
    if name != "steady" and _option(environment, "headless", False) and not _option(environment, "run_time", None):
        raise SystemExit(f"--meshbed-shape {name} needs -t/--run-time (the shape spans it)")
    shape = MeshbedShape(name)
    shape.runner = runner
    environment.shape_class = shape


# -- distributed runs: the master's totals include every request ---------------------------------------------
# A master quitting (-t reached, Ctrl-C) gives its workers 0.5 s for their final
# stats report, and they report every 3 s: under load a run lost up to half of its
# requests from the master's totals. Before it quits, the master asks every worker
# to stop its users and report now, and waits (bounded) until each has.
FLUSH, FLUSHED = "meshbed_flush", "meshbed_flushed"


def _worker_flush(environment: Any, msg: Any, **kw: Any) -> None:
    import gevent

    def flush() -> None:
        runner = environment.runner
        runner.stop()  # users end their request (bounded by --stop-timeout): nothing after this report
        data: dict[str, Any] = {}
        environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
        runner.send_message("stats", data)
        runner.send_message(FLUSHED, None)
    gevent.spawn(flush)


_flushed: set[str] = set()


def _master_flushed(environment: Any, msg: Any, **kw: Any) -> None:
    _flushed.add(str(msg.node_id))


@events.test_stopping.add_listener
def _collect_final_stats(environment: Any, **kw: Any) -> None:
    from locust.runners import MasterRunner
    runner = environment.runner
    if not isinstance(runner, MasterRunner) or not runner.clients.all:
        return
    import time as _time

    import gevent
    _flushed.clear()
    ids = {c.id for c in runner.clients.all}
    runner.send_message(FLUSH, None)
    end = _time.monotonic() + float(environment.stop_timeout or 0) + 15.0
    while not ids <= _flushed and _time.monotonic() < end:
        gevent.sleep(0.05)
    if not ids <= _flushed:
        logging.warning("meshbed: %d of %d workers did not report their final stats in time",
                        len(ids - _flushed), len(ids))


@events.init.add_listener
def _messages(environment: Any, runner: Any = None, **kw: Any) -> None:
    from locust.runners import MasterRunner, WorkerRunner
    if isinstance(runner, WorkerRunner):
        runner.register_message(FLUSH, _worker_flush)
    elif isinstance(runner, MasterRunner):
        runner.register_message(FLUSHED, _master_flushed)


@events.quitting.add_listener
def _flush(environment, **kw) -> None:  # noqa: ANN001
    if _log is not None:
        _log.flush()
