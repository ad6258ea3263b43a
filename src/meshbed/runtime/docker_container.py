"""Starting one container of a run through testcontainers, with Ryuk off while a runtime is open.

Ryuk, testcontainers' reaper, is an image pulled from a registry (unreachable
here); meshbed removes a run's containers itself and sweeps leftovers by label
(``docker_engine.sweep_docker_run``). ``ryuk_disabled()`` turns it off only while
a docker runtime is open: nothing is changed at import time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import ComponentError
from .docker_naming import port_bindings

RYUK_ENV = "TESTCONTAINERS_RYUK_DISABLED"

_ryuk_lock = threading.Lock()
_ryuk_holders = 0
_ryuk_saved: tuple[str | None, bool] = (None, False)


def _tc_config() -> Any:
    try:
        from testcontainers.core.config import testcontainers_config
    except ImportError as exc:
        raise ComponentError("the docker runtime needs the docker SDK and testcontainers",
                             hint="pip install 'meshbed[docker]'") from exc
    return testcontainers_config


@contextlib.contextmanager
def ryuk_disabled() -> Iterator[None]:
    """Set ``TESTCONTAINERS_RYUK_DISABLED=true`` and testcontainers' ``ryuk_disabled`` while held.

    testcontainers reads the setting when a container starts (and caches the
    environment variable on first read), so both are set. Nested or concurrent
    holders share it; the last one out restores the environment variable and
    the config value as they were.
    """
    global _ryuk_holders, _ryuk_saved
    cfg = _tc_config()
    with _ryuk_lock:
        if _ryuk_holders == 0:
            _ryuk_saved = (os.environ.get(RYUK_ENV), bool(cfg.ryuk_disabled))
            os.environ[RYUK_ENV] = "true"
            cfg.ryuk_disabled = True
        _ryuk_holders += 1
    try:
        yield
    finally:
        with _ryuk_lock:
            _ryuk_holders -= 1
            if _ryuk_holders == 0:
                env, value = _ryuk_saved
                if env is None:
                    os.environ.pop(RYUK_ENV, None)
                else:
                    os.environ[RYUK_ENV] = env
                cfg.ryuk_disabled = value


def run_container(image: str, name: str, command: list[str], *, mount: Path, labels: dict[str, str],
                  placement: dict[str, Any], ports: Iterable[int] = (), env: dict[str, str] | None = None,
                  workdir: Path | None = None, orphan: Callable[[Any], None] = lambda c: None) -> Any:
    """Create and start one container through testcontainers' DockerContainer; return the SDK container.

    ``mount`` is bind-mounted at the same path; the container runs under
    ``--init`` as the host uid:gid; ``placement`` is its network (from
    ``docker_network``); every port in ``ports`` is published on 127.0.0.1.
    A container created but not started is handed to ``orphan`` (so the
    caller's close() removes it) before the ComponentError is raised.
    """
    from testcontainers.core.container import DockerContainer
    dc = DockerContainer(image, command=command, name=name, env=dict(env or {}))
    # with_bind_ports cannot say 127.0.0.1: hand the SDK its (host ip, port) form directly
    dc.ports.update(port_bindings(ports))  # type: ignore[arg-type]
    dc.with_volume_mapping(str(mount), str(mount), "rw")
    kwargs: dict[str, Any] = {"labels": labels, "init": True, "user": f"{os.getuid()}:{os.getgid()}", **placement}
    if workdir is not None:
        kwargs["working_dir"] = str(workdir)
    dc.with_kwargs(**kwargs)
    try:
        dc.start()
    except Exception as exc:  # noqa: BLE001 - surface as a component error
        c = getattr(dc, "_container", None)
        if c is not None:
            orphan(c)
        raise ComponentError(f"cannot start container {name} ({image}): {exc}",
                             hint="`docker ps -a --filter label=meshbed.run` shows the run's containers") from exc
    return dc.get_wrapped_container()
