"""The docker runtime: every component in a container (testcontainers + the docker SDK).

docs/docker.md has the long form. The parts:

- ``docker_naming``: container, network and label names; argv -> image mapping;
- ``docker_engine``: the engine client, doctor's line, sweeping a run by label;
- ``docker_container``: one container through testcontainers (Ryuk off while open);
- ``docker_network``: the run's network (static IP per pod) and pods (pause
  containers, published ports, forwarders: ``forwarder.py``);
- here: ``DockerRuntime`` and ``DockerHandle``.

``DockerRuntime(run_dir, state)`` only stores; ``DockerRuntime.open(run_dir,
state)`` (what ``mesh_build.bring_up`` calls) pings the engine, builds missing
images and creates the network. Every port is published on 127.0.0.1 under
the same number; inside containers components bind 0.0.0.0. The run directory
is bind-mounted at the same path everywhere and each component appends its
output to ``<run_dir>/<name>/<name>.log``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..errors import ComponentError
from .base import ComponentSpec, Handle, Runtime, register_runtime, stop_in_order
from .docker_container import ryuk_disabled, run_container
# client, engine_status and LABEL_RUN are imported from here by the CLI and the tests
from .docker_engine import client, engine_status, remove, sweep_docker_run
from .docker_naming import LABEL_COMPONENT, LABEL_RUN, container_name, map_argv, run_labels, wrap_command
from .docker_network import Pods, RunNetwork
from .state import RunState

__all__ = ["DockerHandle", "DockerRuntime", "LABEL_RUN", "client", "engine_status", "sweep_docker_run"]


def _stderr(s: str) -> None:
    print(f"meshbed docker: {s}", file=sys.stderr, flush=True)


class DockerHandle(Handle):
    def __init__(self, rt: "DockerRuntime", spec: ComponentSpec, image: str, command: list[str]) -> None:
        self.spec = spec
        self._rt = rt
        self._image = image
        self._command = command
        self.workdir = rt.run_dir / spec.name
        self.container: Any = None  # docker.models.containers.Container
        self._lock = threading.RLock()

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.log"

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for rel, content in self.spec.files.items():
            (self.workdir / rel).write_text(content)
        with open(self.log_path, "ab") as log:
            log.write(f"--- meshbed: starting {self.spec.name} at {time.strftime('%H:%M:%S')} in {self._image}: "
                      f"{' '.join(self._command)}\n".encode())

    def _launch(self) -> None:
        self._write_files()
        if self.container is not None:  # restart: same container, same config
            self.container.start()
            return
        self.container = self._rt._create(self)

    def _status(self) -> str:
        if self.container is None:
            return "missing"
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed or engine gone: not alive
            return "missing"
        return str(self.container.status)

    def alive(self) -> bool:
        return self._status() in ("running", "paused")

    @property
    def pid(self) -> int | None:
        """Host PID of the container's init (changes when the component restarts)."""
        if self._status() in ("running", "paused"):
            return int(self.container.attrs["State"]["Pid"]) or None
        return None

    @property
    def exit_code(self) -> int | None:
        if self._status() in ("exited", "dead"):
            return int(self.container.attrs["State"]["ExitCode"])
        return None

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            st = self._status()
            if st == "paused":
                self.container.unpause()  # a frozen process cannot act on SIGTERM
            if st in ("running", "paused", "restarting"):
                t = self.spec.stop_timeout if timeout is None else timeout
                self.container.stop(timeout=max(1, int(round(t))))

    def kill(self) -> None:
        with self._lock:
            if self._status() in ("running", "paused"):
                try:
                    self.container.kill()
                except Exception:  # noqa: BLE001 - it died on its own meanwhile
                    pass
                self.container.wait(timeout=10)

    def pause(self) -> None:
        if self._status() == "running":
            self.container.pause()

    def resume(self) -> None:
        if self._status() == "paused":
            self.container.unpause()

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["container"] = self.container.name if self.container is not None else None
        d["pid"] = self.pid
        d["image"] = self._image
        d["ip"] = self._rt.internal_host(self.spec.pod or self.spec.name)
        return d


@register_runtime("docker")
class DockerRuntime(Runtime):
    def __init__(self, run_dir: Path, state: RunState | None = None, progress: Any = _stderr) -> None:
        super().__init__(run_dir)
        self.state = state
        self.run_id = state.run_id if state is not None else run_dir.name
        self.progress = progress
        self.client: Any = None  # docker.DockerClient, once open
        self.images: dict[str, str] = {}  # {kind: tag}, filled by setup
        self.network = RunNetwork(self.run_id, state)
        self.pods = Pods(self.run_id, self.network, self._run, self.images)
        self.handles: list[DockerHandle] = []
        self._orphans: list[Any] = []  # containers created but never started
        self._lock = threading.RLock()
        self._scope = contextlib.ExitStack()  # what setup changed outside this object (Ryuk off)

    @classmethod
    def preflight(cls) -> None:
        client(timeout=10).close()

    def setup(self) -> None:
        """Ping the engine, build missing or stale images, create the run's network."""
        self.client = client()
        self._scope.enter_context(ryuk_disabled())  # from here on testcontainers starts containers
        from ..images import ensure_images
        self.images.update(ensure_images(self.client, self.progress))
        self.network.create(self.client)

    # -- addresses -------------------------------------------------------------

    def listen_host(self) -> str:
        return "0.0.0.0"

    def internal_host(self, pod: str) -> str:
        return self.network.ip(pod)

    # -- containers --------------------------------------------------------------

    def _run(self, image: str, name: str, command: list[str], *, labels: dict[str, str],
             placement: dict[str, Any], ports: Iterable[int] = (), env: dict[str, str] | None = None,
             workdir: Path | None = None) -> Any:
        """Start one container and record it in the run state (close() and the sweeper find it)."""
        c = run_container(image, name, command, mount=self.run_dir, labels=labels, placement=placement,
                          ports=ports, env=env, workdir=workdir, orphan=self._orphans.append)
        if self.state is not None:
            component = labels.get(LABEL_COMPONENT, name)
            self.state.update(lambda d: d.setdefault("containers", []).append(
                {"name": c.name, "id": c.id, "component": component}))
        return c

    def _create(self, h: DockerHandle) -> Any:
        spec = h.spec
        pod_name = spec.pod or spec.name
        env = dict(spec.env)
        env.update(MESHBED_LOG=str(h.log_path), MESHBED_CHECK_HOST=self.internal_host(pod_name),
                   MESHBED_RUN_ID=self.run_id, HOME="/tmp")
        labels = run_labels(self.run_id, pod=pod_name, component=spec.name)
        name = container_name(self.run_id, spec.name)
        ports = set(spec.ports.values())
        with self._lock:
            joined = self.pods.member(pod_name, spec.kind, ports)
            if joined is not None:
                return self._run(h._image, name, h._command, labels=labels, placement=joined,
                                 env=env, workdir=h.workdir)
            c = self._run(h._image, name, h._command, labels=labels, ports=ports,
                          placement=self.network.attach(pod_name, hostname=pod_name), env=env, workdir=h.workdir)
            self.pods.adopt(pod_name, c, ports)
            return c

    def prepare_pod(self, pod: str, ports: Iterable[int]) -> None:
        with self._lock:
            self.pods.prepare(pod, ports)

    def discard(self, pod: str, handles: list[Handle]) -> None:
        """Remove a scaled-down pod's containers (members, pause, forwarders) and forget the pod."""
        with self._lock:
            for h in handles:
                if h in self.handles:
                    self.handles.remove(h)  # type: ignore[arg-type]
                c = getattr(h, "container", None)
                if c is not None:
                    remove(c)
            for c in self.pods.discard(pod):
                remove(c)

    def start(self, spec: ComponentSpec) -> DockerHandle:
        key, argv = map_argv(spec.kind, spec.argv)
        h = DockerHandle(self, spec, self.images[key], wrap_command(argv))
        self.handles.append(h)  # registered before the side effect: close() covers a failed start
        h._launch()
        return h

    # -- teardown ----------------------------------------------------------------

    def close(self) -> None:
        """Stop apps, proxies, then infrastructure; remove every container and the network; sweep by label.

        Safe after a failed or partial ``setup``: it undoes only what happened.
        """
        try:
            if self.client is None:
                return  # never reached the engine: nothing was created
            errors = stop_in_order(list(self.handles), max_workers=8)
            with ThreadPoolExecutor(max_workers=8) as pool:
                containers = [h.container for h in self.handles if h.container is not None]
                list(pool.map(remove, containers + self.pods.extra + self._orphans))
            self.handles.clear()
            self._orphans.clear()
            self.pods.clear()
            try:
                self.network.remove()
            except Exception as exc:  # noqa: BLE001 - the sweep below retries
                errors.append(f"network {self.network.name}: {exc}")
            swept = sweep_docker_run(self.run_id, self.client)  # anything created but never tracked
            if self.state is not None:
                self.state.update(lambda d: d.update(containers=[], networks=[]))
            self.client.close()
            self.client = None  # a second close() is a no-op
            if swept:
                errors.append(f"swept untracked {', '.join(swept)}")
            if errors:
                raise ComponentError("some containers did not stop cleanly: " + "; ".join(errors))
        finally:
            self._scope.close()  # Ryuk setting restored once no runtime holds it
