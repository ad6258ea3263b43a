"""Kill, pause or restart a component of a mesh that another meshbed process owns (`meshbed ctl`).

`meshbed up` (detached or not) serves a Unix socket in its run directory
(``ctl.sock``, inside the 0700 run directory: only its user reaches it). A
request names a target (``controlplane``, ``consul``, ``app:<instance>``,
``sidecar:<instance>``) and an action (kill, stop, restart, pause, resume); the
owner does it on its own handle, so the component stays owned by the process
that tears the mesh down. A restart returns once the component is ready again.

This is what ``controls`` in the JSON of `meshbed up --json` points at, so
`meshbed run --attach` can kill and restart a control plane it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ComponentError, ConfigError

if TYPE_CHECKING:
    from .mesh import Mesh

SOCKET_NAME = "ctl.sock"
ACTIONS = ("kill", "stop", "restart", "pause", "resume")
MAX_REQUEST = 4096


def _handle_for(mesh: "Mesh", target: str) -> Any:
    if target == "controlplane":
        return mesh.controlplane
    if target == "consul":
        return mesh.consul
    kind, _, inst = target.partition(":")
    table = {"app": mesh.apps, "sidecar": mesh.sidecars}.get(kind)
    if table is None or inst not in table:
        raise ConfigError(f"unknown target {target!r}: controlplane, consul, app:<instance> or sidecar:<instance>")
    return table[inst]


def act(mesh: "Mesh", target: str, action: str) -> None:
    """Do ``action`` on ``target``'s handle; a restart waits until it is ready again."""
    from .readiness import wait_ready
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    h = _handle_for(mesh, target)
    if action == "restart":
        h.restart()
        wait_ready(h, mesh.settings.ready_timeout)
    else:
        getattr(h, action)()


def targets(mesh: "Mesh") -> list[str]:
    return ["controlplane", "consul", *(f"app:{i}" for i in mesh.apps), *(f"sidecar:{i}" for i in mesh.sidecars)]


@contextlib.contextmanager
def serve(mesh: "Mesh") -> Iterator[Path | None]:
    """Answer `meshbed ctl` requests for ``mesh`` while the block runs (a thread; the socket is removed on exit).

    Yields the socket's path, or None when it cannot be created (then ``controls`` is left out of the endpoints).
    """
    path = Path(mesh.run_dir) / SOCKET_NAME
    path.unlink(missing_ok=True)
    lock = threading.Lock()  # one action at a time: a restart is not interleaved with a kill

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                req = json.loads(self.rfile.readline(MAX_REQUEST))
                with lock:
                    act(mesh, str(req.get("target")), str(req.get("action")))
                reply: dict[str, Any] = {"ok": True}
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as one line
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")

    try:
        server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    except OSError:  # e.g. a run directory path too long for a Unix socket: the mesh runs without `meshbed ctl`
        yield None
        return
    os.chmod(path, 0o600)
    t = threading.Thread(target=server.serve_forever, name="meshbed-ctl", daemon=True)
    t.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)


def request(run_dir: str | Path, target: str, action: str, timeout: float = 300.0) -> None:
    """Ask the owner of the mesh in ``run_dir`` to do ``action`` on ``target``; ComponentError if it could not."""
    path = Path(run_dir) / SOCKET_NAME
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if not path.exists():
        raise ConfigError(f"{path}: no control socket: the mesh of this run directory is not up (or predates "
                          "`meshbed ctl`)", hint="`meshbed status` lists the running meshes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps({"target": target, "action": action}).encode() + b"\n")
            data = s.makefile("rb").readline(MAX_REQUEST)
        except OSError as exc:
            raise ComponentError(f"meshbed ctl: {target} {action}: {exc}",
                                 hint="is the mesh's `meshbed up` still running? `meshbed status`") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ComponentError(f"meshbed ctl: {target} {action}: no answer from the mesh's owner") from None
    if not reply.get("ok"):
        raise ComponentError(f"meshbed ctl: {target} {action}: {reply.get('error')}")


def commands(mesh: "Mesh") -> dict[str, dict[str, list[str]]]:
    """For `meshbed up --json`: per target, per action, the command that does it (``controls``).

    The same as `meshbed ctl --run-dir DIR TARGET ACTION`, through this module alone: it starts in a
    fraction of the CLI's time, which a check that times a restart would otherwise count.
    """
    if not (Path(mesh.run_dir) / SOCKET_NAME).exists():
        return {}
    base = [sys.executable, "-m", "meshbed.supervisor_ctl", "--run-dir", str(mesh.run_dir)]
    return {t: {a: [*base, t, a] for a in ACTIONS} for t in targets(mesh)}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4 or args[0] != "--run-dir":
        print("usage: python -m meshbed.supervisor_ctl --run-dir DIR TARGET ACTION", file=sys.stderr)
        return 2
    try:
        request(args[1], args[2], args[3])
    except ConfigError as exc:
        print(f"meshbed ctl: error: {exc}", file=sys.stderr)
        return 2
    except ComponentError as exc:
        print(f"meshbed ctl: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
