"""A pre-imported fork server for sample instances: one Python start-up for all of them.

Importing aiohttp and OpenTelemetry costs about 0.25 CPU-seconds per
interpreter, and a mesh of five instances paid it five times on two cores. This
server imports them once, then forks one child per instance on request. Each
child calls ``setsid``: it has its own PID, process group, log, port, Consul
registration, counters and fault knobs, so pausing (SIGSTOP) or killing one
hits exactly that instance, as with one interpreter per instance.

Protocol: one JSON line per connection on a Unix socket, one JSON line back.

* ``{"op": "spawn", "argv": [...], "cwd": DIR, "log": FILE, "env": {...}}`` -> ``{"pid": N}``
  (``argv`` as for ``python -m meshbed.sample``);
* ``{"op": "exit", "pid": N}`` -> ``{"code": C}`` (``null`` while it runs or when unknown).

The server holds no threads and no event loop (fork-safe), reaps its children
on SIGCHLD and exits within a second of the process that started it going away
(its children are their own sessions: the runtime stops each one by PID).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback
from typing import Any

MAX_EXITS = 1000  # exit codes remembered for `exit` queries


def preimport() -> None:
    """Import everything an instance imports, so a child starts with it all loaded."""
    import aiohttp  # noqa: F401
    from aiohttp import web  # noqa: F401

    from . import app, main, registration, tracing  # noqa: F401
    try:  # what tracing.make_exporter imports lazily
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: F401
    except ImportError:
        from . import otlp_json  # noqa: F401


class Server:
    def __init__(self, path: str, parent: int) -> None:
        self.path = path
        self.parent = parent
        self.exits: dict[int, int] = {}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def reap(self, *_: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exits[pid] = os.waitstatus_to_exitcode(status)
            while len(self.exits) > MAX_EXITS:
                self.exits.pop(next(iter(self.exits)))

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self.reap)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.sock.settimeout(1.0)
        while os.getppid() == self.parent:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(5.0)
                try:
                    reply = self.handle(json.loads(_read_line(conn)))
                except Exception as exc:  # noqa: BLE001 - a bad request must not end the server
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "exit":
            self.reap()
            return {"code": self.exits.get(int(req["pid"]))}
        if op == "spawn":
            return {"pid": self.spawn([str(a) for a in req["argv"]], str(req["cwd"]), str(req["log"]),
                                      {str(k): str(v) for k, v in dict(req.get("env") or {}).items()})}
        raise ValueError(f"unknown op {op!r}")

    def spawn(self, argv: list[str], cwd: str, log: str, env: dict[str, str]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the child: become one instance, never return into the server loop
            self.sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()
            os.chdir(cwd)
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            os.close(null)
            os.environ.update(env)
            from .main import main

            code = main(argv)
        except SystemExit as exc:  # argparse errors exit 2
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report, then exit non-zero
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)


def _read_line(conn: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def main(argv: list[str] | None = None) -> int:
    """``python -m meshbed.sample.forkserver SOCKET PARENT_PID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m meshbed.sample.forkserver SOCKET PARENT_PID", file=sys.stderr)
        return 2
    preimport()
    print(f"meshbed.sample.forkserver: ready on {args[0]} (pid {os.getpid()})", file=sys.stderr, flush=True)
    Server(args[0], int(args[1])).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
