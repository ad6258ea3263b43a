"""What every runtime gives: component specs in, uniform handles out.

A runtime (process, docker, ...) turns a ComponentSpec into a running
component and hands back a Handle with the same operations everywhere:
addresses, logs, stop, kill, pause/resume, restart. Runtimes register by name.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .state import RunState

R = TypeVar("R", bound="Runtime")


@dataclass
class ComponentSpec:
    name: str  # unique in the run: "consul", "envoy-frontend-0", "app-backend-2"
    kind: str  # consul | jaeger | toxiproxy | controlplane | envoy | app
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # named ports this component listens on; a runtime makes each reachable
    # from the test process at 127.0.0.1:<same port>
    ports: dict[str, int] = field(default_factory=dict)
    # the address the component binds inside its own network namespace
    host: str = "127.0.0.1"
    # files to write into the component's directory before it starts
    files: dict[str, str] = field(default_factory=dict)
    # readiness: a probe called with the handle; truthy = ready
    ready: Callable[["Handle"], object] | None = None
    ready_what: str = "readiness"
    ready_hint: str = ""
    stop_timeout: float = 5.0
    # components of one pod share a network namespace (an app and its
    # sidecar); others reach the pod at runtime.internal_host(pod)
    pod: str = ""


class Handle(abc.ABC):
    """A running component. All methods are safe to call on a dead one."""

    spec: ComponentSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    def address(self, port: str) -> str:
        """Where the test process reaches this port (always loopback)."""
        return f"127.0.0.1:{self.spec.ports[port]}"

    def url(self, port: str, path: str = "") -> str:
        return f"http://{self.address(port)}{path}"

    @property
    @abc.abstractmethod
    def log_path(self) -> Path: ...

    @abc.abstractmethod
    def alive(self) -> bool: ...

    @abc.abstractmethod
    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM), then kill after ``timeout``."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Immediate kill -9: the crash a test wants to survive."""

    @abc.abstractmethod
    def pause(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def _launch(self) -> None:
        """Start (or start again) the component from its spec."""

    def restart(self) -> None:
        """Stop, then start again with the same spec and ports (does not wait for ready)."""
        with self._lock:  # type: ignore[attr-defined]
            self.stop()
            self._launch()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "ports": dict(self.spec.ports), "log": str(self.log_path)}

    def usage(self) -> dict[str, float] | None:
        """CPU seconds and peak RSS (MB) over the component's lives, where the runtime can tell; else None."""
        return None


class Runtime(abc.ABC):
    """Starts components for one run; close() stops every one it started.

    The constructor only stores its arguments; ``open`` constructs and then runs
    ``setup`` (whatever the runtime needs before its first component: an
    engine, images, a network), so a caller gets a ready runtime or an error
    with nothing left behind.
    """

    name: ClassVar[str]

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    @classmethod
    def preflight(cls) -> None:
        """Raise a one-line MeshbedError if this runtime cannot work here (e.g. no Docker engine)."""

    @classmethod
    def open(cls: type[R], run_dir: Path, state: "RunState | None" = None) -> R:
        """A runtime for ``run_dir``, set up and ready to start components.

        close() is armed before setup's first side effect: when setup fails,
        close() undoes whatever it did (its own error is dropped in favour of
        setup's) and setup's error propagates.
        """
        rt = cls(run_dir, state)  # type: ignore[call-arg]  # every registered runtime takes (run_dir, state)
        try:
            rt.setup()
        except BaseException:
            try:
                rt.close()
            except Exception:  # noqa: BLE001 - report setup's error, not the cleanup's
                pass
            raise
        return rt

    def setup(self) -> None:
        """Acquire what the runtime needs before its first component (called once, by ``open``)."""

    @abc.abstractmethod
    def start(self, spec: ComponentSpec) -> Handle: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def listen_host(self) -> str:
        """The address components bind inside their own network namespace."""
        return "127.0.0.1"

    def prepare_pod(self, pod: str, ports: list[int]) -> None:
        """Announce a pod's ports before its members start (docker publishes them on the pod's netns)."""

    def discard(self, pod: str, handles: list["Handle"]) -> None:
        """Forget a removed pod's (stopped) components, so its name can be used again."""

    def internal_host(self, pod: str) -> str:
        """The host other components dial to reach ``pod`` (loopback for processes)."""
        return "127.0.0.1"


# teardown order: apps first (they deregister from Consul), then proxies, then
# the control plane and the infrastructure
STOP_ORDER = {"app": 0, "envoy": 1, "controlplane": 2, "toxiproxy": 3, "jaeger": 3, "consul": 4}


def stop_in_order(handles: list[Handle], max_workers: int = 16) -> list[str]:
    """Stop handles group by group in STOP_ORDER, each group in parallel; returns the errors."""
    from concurrent.futures import ThreadPoolExecutor

    groups: dict[int, list[Handle]] = {}
    for h in handles:
        groups.setdefault(STOP_ORDER.get(h.kind, 9), []).append(h)
    errors: list[str] = []

    def stop(h: Handle) -> None:
        try:
            h.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the rest
            errors.append(f"{h.name}: {exc}")

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for k in sorted(groups):
            list(pool.map(stop, groups[k]))
    return errors


_RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(name: str) -> Callable[[type[Runtime]], type[Runtime]]:
    def deco(cls: type[Runtime]) -> type[Runtime]:
        _RUNTIMES[name] = cls
        cls.name = name
        return cls

    return deco


def runtime_factory(name: str) -> type[Runtime]:
    """The runtime class registered as ``name``: ``preflight()`` it, then ``open(run_dir, state)``."""
    if name not in _RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; available: {', '.join(sorted(_RUNTIMES))}")
    return _RUNTIMES[name]


def runtime_names() -> list[str]:
    return sorted(_RUNTIMES)
