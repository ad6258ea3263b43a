import socket
import subprocess
import sys

from meshbed.ports import PortAllocator, is_free
from meshbed.runtime import procutil
from meshbed.runtime.state import RunState, list_runs, sweep_orphans


def test_allocator_never_repeats_and_skips_busy():
    alloc = PortAllocator(seed=1)
    taken = {alloc.take() for _ in range(50)}
    assert len(taken) == 50
    assert all(20000 <= p <= 32767 for p in taken)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not is_free(s.getsockname()[1])


def test_pid_identity_includes_start_time():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = procutil.start_time(p.pid)
        assert st is not None
        assert procutil.is_ours(p.pid, st)
        assert not procutil.is_ours(p.pid, st + 1)  # a recycled PID would not match
        procutil.terminate(p.pid, st, grace=2)
        p.wait(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()


def test_sweep_orphans_kills_processes_of_a_dead_supervisor(tmp_path):
    st = RunState.create(tmp_path, "process", "t.yaml")
    # pretend the supervisor was a process that is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st.update(lambda d: d.__setitem__("supervisor", {"pid": dead.pid, "start": 1}))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        st.record_process("orphan", child.pid)
        swept = sweep_orphans(tmp_path)
        assert swept == {st.run_id: ["orphan"]}
        child.wait(timeout=5)
        assert list_runs(tmp_path)[0].data["status"] == "down"
    finally:
        if child.poll() is None:
            child.kill()


def test_stop_ends_a_wrapper_scripts_children(tmp_path):
    from meshbed.runtime.base import ComponentSpec
    from meshbed.runtime.process import ProcessRuntime
    rt = ProcessRuntime(tmp_path)
    pidfile = tmp_path / "child.pid"
    # a wrapper that ignores SIGTERM itself and leaves a child behind
    script = f"trap '' TERM; {sys.executable} -c 'import os,time; open(\"{pidfile}\",\"w\").write(str(os.getpid())); time.sleep(60)' & wait"
    h = rt.start(ComponentSpec(name="wrapped", kind="app", argv=["sh", "-c", script], stop_timeout=1.0))
    try:
        import time
        end = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < end:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        st = procutil.start_time(child)
        assert procutil.is_ours(child, st)
        h.stop()
        assert not procutil.is_ours(child, st), "the wrapper's child survived stop()"
    finally:
        rt.close()
