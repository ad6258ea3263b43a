"""The default runtime: every component is a local process on 127.0.0.1.

Sample instances (a spec running ``python -m meshbed.sample``) are forked from
one pre-imported fork server (:mod:`meshbed.sample.forkserver`) started when
the runtime opens, so a mesh pays one Python start-up for all its instances.
Each forked instance is still its own process and session: stop, kill, pause
and restart act on it alone, by PID and start time.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from .. import wait
from ..errors import ComponentError, WaitTimeout
from . import procutil
from .base import STOP_ORDER, ComponentSpec, Handle, Runtime, register_runtime, stop_in_order
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
            exe = Path(self.spec.argv[0])
            if exe.is_dir():  # never suggest chmod on a directory
                raise ComponentError(f"{self.spec.name}: {exe} is a directory, not a {self.spec.name} binary",
                                     hint="point meshbed at the binary itself, or run `meshbed doctor`") from exc
            raise ComponentError(f"{self.spec.name}: {exe} is not executable",
                                 hint=f"chmod +x {exe}" if exe.is_file() else "run `meshbed doctor`") from exc
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


FORKSERVER_MODULE = "meshbed.sample.forkserver"
FORKABLE = [sys.executable, "-m", "meshbed.sample"]  # argv prefix the fork server runs
FORKSERVER_READY_S = 20.0  # its imports take ~0.3 s idle; generous for a loaded machine


def forkable(spec: ComponentSpec) -> bool:
    """A sample instance: the fork server can run it (same interpreter, same module)."""
    return spec.argv[: len(FORKABLE)] == FORKABLE


class ForkServerUnavailable(ComponentError):
    """The fork server is not running (failed to start, or gone): start a plain process instead."""


class ForkServer:
    """The runtime's client of :mod:`meshbed.sample.forkserver`: started once, stopped on close."""

    def __init__(self, run_dir: Path, state: RunState | None) -> None:
        self.run_dir = run_dir
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None
        self.failed = False  # it did not listen in time once: later starts go straight to plain processes
        self.path = str(run_dir / "forkserver.sock")
        if len(self.path.encode()) > 100:  # sun_path holds 108 bytes
            self._tmp = tempfile.mkdtemp(prefix="meshbed-fs-")
            self.path = os.path.join(self._tmp, "s")

    @property
    def log_path(self) -> Path:
        return self.run_dir / "forkserver.log"

    def start(self) -> None:
        """Start importing now (does not wait): the imports overlap with the infrastructure's start."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", FORKSERVER_MODULE, self.path, str(os.getpid())],
                cwd=self.run_dir, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        if self.state is not None:
            self.state.record_process("forkserver", self.proc.pid)

    def request(self, msg: dict[str, object], timeout: float = FORKSERVER_READY_S) -> dict[str, object]:
        """Send one request, waiting (up to ``timeout``) for the server to listen."""
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while True:
            if self.failed or self.proc is None or self.proc.poll() is not None:
                raise ForkServerUnavailable(f"the sample fork server is not running (see {self.log_path})")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10.0)
                    s.connect(self.path)
                    s.sendall(json.dumps(msg).encode() + b"\n")
                    buf = b""
                    while not buf.endswith(b"\n"):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                reply = json.loads(buf.decode() or "{}")
                if "error" in reply or not reply:
                    raise ComponentError(f"sample fork server: {reply.get('error', 'no answer')}",
                                         hint=f"see {self.log_path}")
                return reply
            except (FileNotFoundError, ConnectionRefusedError) as exc:  # not listening yet
                last = exc
            if time.monotonic() >= deadline:
                self.failed = True
                raise ForkServerUnavailable(f"the sample fork server did not listen on {self.path} within "
                                            f"{timeout:g}s (last: {last}); see {self.log_path}")
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)
        if self.proc is not None and self.state is not None:
            self.state.record_process("forkserver", None)
        if self._tmp is not None:
            import shutil
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class ForkedHandle(ProcessHandle):
    """A sample instance forked from the fork server; a plain process when the server is unavailable."""

    def __init__(self, spec: ComponentSpec, workdir: Path, state: RunState | None, server: ForkServer) -> None:
        super().__init__(spec, workdir, state)
        self._server = server
        self._pid: int | None = None
        self._exit: int | None = None

    @property
    def forked(self) -> bool:
        return self._pid is not None

    @property
    def pid(self) -> int | None:
        return self._pid if self.forked else super().pid

    def _launch(self) -> None:
        self._pid = self._exit = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        for rel, content in self.spec.files.items():
            (self.workdir / rel).write_text(content)
        with open(self.log_path, "ab", buffering=0) as log:
            log.write(f"--- meshbed: starting {self.spec.name} (forked) at {time.strftime('%H:%M:%S')}: "
                      f"{' '.join(self.spec.argv)}\n".encode())
        try:
            reply = self._server.request({"op": "spawn", "argv": self.spec.argv[len(FORKABLE):],
                                          "cwd": str(self.workdir), "log": str(self.log_path), "env": self.spec.env})
        except ForkServerUnavailable:
            super()._launch()  # slower, same behaviour
            return
        pid = int(reply["pid"])  # type: ignore[call-overload]
        self._pid = pid
        self._started = procutil.start_time(pid)
        if self._state is not None:
            self._state.record_process(self.spec.name, pid)

    def alive(self) -> bool:
        if not self.forked:
            return super().alive()
        return procutil.is_ours(self._pid, self._started)  # type: ignore[arg-type]

    @property
    def exit_code(self) -> int | None:
        if not self.forked:
            return super().exit_code
        if self._exit is None and not self.alive():
            # a killed instance's main thread shows as a zombie while its other threads still exit,
            # and the server can reap it only after that: ask again for a moment
            try:
                self._exit = wait.until(self._reaped, 2.0, 0.02, what=f"{self.spec.name}'s exit status",
                                        fatal=(ComponentError,)).value[0]
            except (ComponentError, WaitTimeout):
                pass
        return self._exit

    def _reaped(self) -> tuple[int] | None:
        code = self._server.request({"op": "exit", "pid": self._pid}, timeout=1.0).get("code")
        return (code,) if isinstance(code, int) else None

    def _signal(self, sig: int) -> None:
        if not self.forked:
            return super()._signal(sig)
        if not self.alive():
            return
        try:
            os.killpg(self._pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:  # not yet its own session (setsid comes first thing after fork)
            procutil.signal_if_ours(self._pid, self._started, sig)  # type: ignore[arg-type]

    def _wait_gone(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float | None = None) -> None:
        if not self.forked:
            return super().stop(timeout)
        with self._lock:
            if self.alive():
                self._bank_usage()
                self._signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                self._signal(signal.SIGTERM)
                if not self._wait_gone(self.spec.stop_timeout if timeout is None else timeout):
                    self._signal(signal.SIGKILL)
                    self._wait_gone(5)
            procutil.terminate_group(self._pid, self._started, 1.0)  # type: ignore[arg-type]
            if self._state is not None:
                self._state.record_process(self.spec.name, None)

    def kill(self) -> None:
        if not self.forked:
            return super().kill()
        with self._lock:
            if self.alive():
                self._bank_usage()
                self._signal(signal.SIGKILL)
                self._wait_gone(5)
            procutil.terminate_group(self._pid, self._started, 0.0)  # type: ignore[arg-type]


_LIVE: "weakref.WeakSet[ProcessRuntime]" = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    # last line of defence (an interpreter exiting on an unhandled error or
    # Ctrl-C outside any context manager): nothing we started survives us
    for rt in list(_LIVE):
        try:
            rt.close(parallel=False)  # thread pools refuse work once the interpreter shuts down
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


@register_runtime("process")
class ProcessRuntime(Runtime):
    def __init__(self, run_dir: Path, state: RunState | None = None) -> None:
        super().__init__(run_dir)
        self.state = state
        self.handles: list[ProcessHandle] = []
        self.fork_server: ForkServer | None = None
        _LIVE.add(self)

    use_fork_server = True  # False: every sample instance is its own interpreter (tests compare both)

    def setup(self) -> None:
        if self.use_fork_server:
            self.fork_server = ForkServer(self.run_dir, self.state)
            self.fork_server.start()

    def start(self, spec: ComponentSpec) -> ProcessHandle:
        h: ProcessHandle
        if self.fork_server is not None and forkable(spec):
            h = ForkedHandle(spec, self.run_dir / spec.name, self.state, self.fork_server)
        else:
            h = ProcessHandle(spec, self.run_dir / spec.name, self.state)
        self.handles.append(h)  # registered before the side effect: close() covers a failed start
        h._launch()
        return h

    def discard(self, pod: str, handles: list[Handle]) -> None:
        for h in handles:  # already stopped by the caller
            if h in self.handles:
                self.handles.remove(h)  # type: ignore[arg-type]

    def close(self, parallel: bool = True) -> None:
        """Stop everything this runtime started (``parallel=False``: one by one, for atexit)."""
        if parallel:
            errors = stop_in_order(list(self.handles))
        else:
            errors = []
            for h in sorted(self.handles, key=lambda h: STOP_ORDER.get(h.kind, 9)):
                try:
                    h.stop()
                except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                    errors.append(f"{h.name}: {exc}")
        self.handles.clear()
        if self.fork_server is not None:
            self.fork_server.stop()
            self.fork_server = None
        if errors:
            raise ComponentError("some components did not stop cleanly: " + "; ".join(errors))
