"""The default runtime: every component is a local process on 127.0.0.1."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path

from ..errors import ComponentError
from . import procutil
from .base import ComponentSpec, Handle, Runtime, register_runtime, stop_in_order
from .state import RunState


class ProcessHandle(Handle):
    def __init__(self, spec: ComponentSpec, workdir: Path, state: RunState | None) -> None:
        self.spec = spec
        self.workdir = workdir
        self._state = state
        self._proc: subprocess.Popen[bytes] | None = None
        self._started: int | None = None
        self._lock = threading.RLock()
        self._past_usage: tuple[float, float] = (0.0, 0.0)  # cpu s, peak RSS MB of earlier lives

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for rel, content in self.spec.files.items():
            (self.workdir / rel).write_text(content)
        env = dict(os.environ)
        env.update(self.spec.env)
        log = open(self.log_path, "ab", buffering=0)
        log.write(f"--- meshbed: starting {self.spec.name} at {time.strftime('%H:%M:%S')}: {' '.join(self.spec.argv)}\n".encode())
        try:
            self._proc = subprocess.Popen(
                self.spec.argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ComponentError(f"{self.spec.name}: cannot start {self.spec.argv[0]}: file not found",
                                 hint="run `meshbed doctor` to see which binaries are missing") from exc
        except PermissionError as exc:
            raise ComponentError(f"{self.spec.name}: {self.spec.argv[0]} is not executable",
                                 hint=f"chmod +x {self.spec.argv[0]}") from exc
        finally:
            log.close()
        self._started = procutil.start_time(self._proc.pid)
        if self._state is not None:
            self._state.record_process(self.spec.name, self._proc.pid)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def _signal(self, sig: int) -> None:
        """Signal the component's whole process group (it runs in its own session)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def _end_group(self, grace: float) -> None:
        """After the leader exits: end what it left in its group (a wrapper's children)."""
        if self._proc is not None:
            procutil.terminate_group(self._proc.pid, self._started, grace)

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._proc is None:
                return
            if self._proc.poll() is None:
                self._bank_usage()
                self._signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                self._signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=self.spec.stop_timeout if timeout is None else timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self._proc.wait(timeout=5)
            self._end_group(grace=1.0)
            if self._state is not None:
                self._state.record_process(self.spec.name, None)

    def usage(self) -> dict[str, float] | None:
        """CPU seconds and peak RSS over every life of this component (restarts add up; the peak is the max)."""
        now = procutil.usage(self.pid) if self.pid else None
        cpu, peak = self._past_usage
        if now is not None:
            cpu, peak = cpu + now[0], max(peak, now[1])
        return {"cpu_s": round(cpu, 3), "peak_rss_mb": round(peak, 1)} if (cpu or peak) else None

    def _bank_usage(self) -> None:
        """Keep what this life used before it ends (a restart starts the counters again)."""
        now = procutil.usage(self.pid) if self.pid else None
        if now is not None:
            self._past_usage = (self._past_usage[0] + now[0], max(self._past_usage[1], now[1]))

    def kill(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._bank_usage()
                self._signal(signal.SIGKILL)
                self._proc.wait(timeout=5)
            self._end_group(grace=0.0)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["pid"] = self.pid
        return d


_LIVE: "weakref.WeakSet[ProcessRuntime]" = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    # last line of defence (an interpreter exiting on an unhandled error or
    # Ctrl-C outside any context manager): nothing we started survives us
    for rt in list(_LIVE):
        try:
            rt.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


@register_runtime("process")
class ProcessRuntime(Runtime):
    def __init__(self, run_dir: Path, state: RunState | None = None) -> None:
        super().__init__(run_dir)
        self.state = state
        self.handles: list[ProcessHandle] = []
        _LIVE.add(self)

    def start(self, spec: ComponentSpec) -> ProcessHandle:
        h = ProcessHandle(spec, self.run_dir / spec.name, self.state)
        self.handles.append(h)  # registered before the side effect: close() covers a failed start
        h._launch()
        return h

    def discard(self, pod: str, handles: list[Handle]) -> None:
        for h in handles:  # already stopped by the caller
            if h in self.handles:
                self.handles.remove(h)  # type: ignore[arg-type]

    def close(self) -> None:
        errors = stop_in_order(list(self.handles))
        self.handles.clear()
        if errors:
            raise ComponentError("some components did not stop cleanly: " + "; ".join(errors))
