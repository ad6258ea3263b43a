"""The control plane's debug HTTP API (aiohttp), for readiness and convergence checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from .catalog import MeshState
    from .consul_watch import ConsulWatcher
    from .pushlog import PushLog
    from .snapshot import Snapshot


class DebugSource(Protocol):
    """What the debug API reads (the control plane, ``server.ControlPlane``; a
    Protocol so that this module does not import the server that imports it)."""

    @property
    def synced(self) -> bool: ...

    @property
    def pushlog(self) -> "PushLog": ...

    @property
    def watcher(self) -> "ConsulWatcher": ...

    @property
    def state(self) -> "MeshState": ...

    def describe_nodes(self) -> list[dict[str, Any]]: ...

    def snapshot_for_node(self, node_id: str) -> "Snapshot | None": ...


CP_KEY: web.AppKey[DebugSource] = web.AppKey("cp")


async def healthz(request: web.Request) -> web.Response:
    """200 only once the first Consul sync is done: before that the CP would push nothing useful."""
    cp = request.app[CP_KEY]
    if cp.synced:
        return web.json_response({"ok": True})
    return web.json_response({"ok": False, "reason": "first Consul sync not done"}, status=503)


async def pushes(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    try:
        since = float(request.query.get("since", "0") or 0)
    except ValueError:
        return web.json_response({"error": "since must be a unix timestamp"}, status=400)
    return web.json_response([e.to_json() for e in cp.pushlog.since(since)])


async def rounds(request: web.Request) -> web.Response:
    """Push rounds newer than ``since`` (unix s): when Consul answered, when the change was seen,
    when building every stream's responses began and ended (``bench convergence --breakdown``)."""
    cp = request.app[CP_KEY]
    try:
        since = float(request.query.get("since", "0") or 0)
    except ValueError:
        return web.json_response({"error": "since must be a unix timestamp"}, status=400)
    return web.json_response([r for r in getattr(cp, "rounds", ()) if r["push_start"] > since])


async def nodes(request: web.Request) -> web.Response:
    return web.json_response(request.app[CP_KEY].describe_nodes())


async def snapshot(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    node = request.match_info["node"]
    snap = cp.snapshot_for_node(node)
    if snap is None:
        return web.json_response({"error": f"no known node {node!r} (or not synced yet)"}, status=404)
    return web.json_response({"node": node, **snap.to_json()})


async def state(request: web.Request) -> web.Response:
    cp = request.app[CP_KEY]
    return web.json_response({"consul": cp.watcher.describe(), **cp.state.to_json()})


def make_app(cp: DebugSource) -> web.Application:
    app = web.Application()
    app[CP_KEY] = cp
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/debug/pushes", pushes)
    app.router.add_get("/debug/nodes", nodes)
    app.router.add_get("/debug/rounds", rounds)
    app.router.add_get("/debug/snapshot/{node}", snapshot)
    app.router.add_get("/debug/state", state)
    return app


async def start(cp: DebugSource, host: str, port: int) -> web.AppRunner:
    """Start serving; the caller cleans up the returned runner."""
    runner = web.AppRunner(make_app(cp), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
