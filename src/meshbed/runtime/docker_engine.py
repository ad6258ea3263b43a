"""The Docker engine: a client (or a one-line error saying how to get one), doctor's
status line, and sweeping a run's leftovers by label.

Importing this module registers ``_sweeper`` in ``runtime.state.EXTRA_SWEEPERS``
(the way runtimes register by name): ``meshbed down`` and the next ``meshbed up``
then remove a dead run's containers and network. The docker SDK itself is
imported only when a client is asked for.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ComponentError
from .docker_naming import LABEL_RUN
from .state import EXTRA_SWEEPERS, RunState

ENGINE_HINT = "start dockerd (sudo dockerd > /var/log/dockerd.log 2>&1 &) or set DOCKER_HOST"


def client(timeout: int = 60) -> Any:
    """A docker SDK client, or a ComponentError saying how to get an engine."""
    try:
        import docker
    except ImportError as exc:
        raise ComponentError("the docker runtime needs the docker SDK and testcontainers",
                             hint="pip install 'meshbed[docker]'") from exc
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise ComponentError(f"docker: engine not reachable at {where}: {type(exc).__name__}", hint=ENGINE_HINT) from exc
    return c


def engine_status() -> tuple[bool, str]:
    """(usable, one line) for `meshbed doctor`."""
    try:
        c = client(timeout=5)
    except ComponentError as exc:
        return False, str(exc)
    try:
        v = c.version()
        return True, f"docker engine {v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"
    except Exception as exc:  # noqa: BLE001
        return False, f"docker: engine answered ping but not version: {exc}"
    finally:
        c.close()


def remove(c: Any) -> None:
    """Force-remove a container (and its anonymous volumes); already gone is fine."""
    try:
        c.remove(force=True, v=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def sweep_docker_run(run_id: str, c: Any) -> list[str]:
    """Remove every container and network labelled with ``run_id``; return what was removed."""
    removed: list[str] = []
    flt = {"label": f"{LABEL_RUN}={run_id}"}
    for ct in c.containers.list(all=True, filters=flt):
        remove(ct)
        removed.append(ct.name)
    for net in c.networks.list(filters=flt):
        try:
            net.remove()
            removed.append(f"network {net.name}")
        except Exception:  # noqa: BLE001
            pass
    return removed


def _sweeper(state: RunState) -> list[str]:
    d = state.data
    if d.get("runtime") != "docker" and not d.get("containers") and not d.get("networks"):
        return []
    try:
        c = client(timeout=20)
    except ComponentError:
        return []
    try:
        swept = sweep_docker_run(state.run_id, c)
    finally:
        c.close()
    state.update(lambda dd: dd.update(containers=[], networks=[]))
    return swept


if _sweeper not in EXTRA_SWEEPERS:
    EXTRA_SWEEPERS.append(_sweeper)
