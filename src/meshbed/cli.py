"""The `meshbed` command: provision, doctor, up, status, down."""

from __future__ import annotations

import os
import signal
import sys

from . import _interrupted_while_starting  # installed by the package already, for the `meshbed` command

# Ctrl-C while the command is still importing: one line, not a traceback from the middle of an import.
# Only as the program itself (never when a test imports this module), and never over an inherited SIG_IGN.
if (__name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "meshbed") \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from . import __version__  # noqa: E402
from .console import Progress, endpoints_table, error_line  # noqa: E402
from .errors import ConfigError, MeshbedError  # noqa: E402
from .runtime.state import FILE_MODE, RUN_ID_RE, RunState, list_runs, sweep_orphans, sweep_run, sweep_strays  # noqa: E402
from .safeio import check_writable_dir, show  # noqa: E402
from .settings import Settings, check_seconds, parse_float  # noqa: E402


def _settings(args: argparse.Namespace) -> Settings:
    cli = {k: getattr(args, k, None) for k in ("runtime", "topology", "state_dir", "ready_timeout", "controlplane",
                                                "load_workers")}
    settings = Settings.build(cli=cli)
    if hasattr(args, "topology"):  # up, _supervise, bench: -f is a file or an example's name; none given: basic
        from .packaged import with_defaults
        settings = with_defaults(settings, cli=cli)
    return settings


def _preflight_paths(settings: Settings) -> None:
    """Before anything starts: the binaries given by environment, and a usable state directory (cheap, no process)."""
    from .preflight import check_binary_overrides
    check_binary_overrides()
    check_writable_dir(settings.runs_dir, "state directory")


def _preflight(settings: Settings) -> None:
    """What `up` and `run` check before anything starts (binaries run, state dir, ports, engine): one line, exit 2."""
    from .preflight import check_environment
    check_environment(settings)


def _prune_by_retention(settings: Settings, progress: Progress | None = None) -> None:
    """The retention setting (keep_runs): finished run directories beyond the newest N go before a new run."""
    from .prune import apply_retention, human_size
    res = apply_retention(settings.runs_dir, settings.keep_runs)
    if res is not None and res.removed and progress is not None:
        progress(f"pruned {len(res.removed)} finished run director{'y' if len(res.removed) == 1 else 'ies'} "
                 f"({human_size(res.freed)}; keeping the newest {settings.keep_runs}, MESHBED_KEEP_RUNS)")


def _open_private(path: Path) -> Any:
    """Append to a log of the run directory, created 0600 (the run directory itself is 0700)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), "ab")


def _sigterm_as_interrupt() -> None:
    """SIGTERM and SIGINT unwind the mesh (KeyboardInterrupt) once; further ones cannot cut the teardown short."""
    def handler(signum: int, frame: Any) -> None:
        _quiet_interrupts()
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started with Ctrl-C ignored (`cmd &`): keep it so
        signal.signal(signal.SIGINT, handler)


# -- provision / doctor ------------------------------------------------------

def _provision_names(value: str) -> list[str]:
    """``--only consul,toxiproxy`` (or repeated): the components to build."""
    known = ("consul", "jaeger", "toxiproxy", "eureka")
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown component {', '.join(bad) or repr(value)}; known: {', '.join(known)}")
    return names


def cmd_provision(args: argparse.Namespace) -> int:
    from .provision import build_missing
    progress = Progress()
    only = [n for n in args.only or [] if n != "eureka"]
    if args.only and "eureka" in args.only:  # optional, needs Java and Maven: built only when asked or first used
        from .provision import eureka
        progress(f"eureka: {eureka.build(progress)}")
    if only or not args.only:
        build_missing(only or None, progress)
    progress("all components present; `meshbed doctor` lists them")
    if args.docker:
        from .images import ensure_images
        from .runtime.docker import client
        for kind, tag in ensure_images(client(), progress).items():
            progress(f"docker image for {kind}: {tag}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .provision.binaries import find_all, fix_hint
    problems = []
    rows = []
    for name, b in find_all().items():
        version = b.version() if b.found else "-"
        rows.append({"component": name, "version": version, "pinned": b.pinned, "source": b.source,
                     "path": str(b.path) if b.path else None})
        if not b.found:
            problems.append(f"{name}: missing: {fix_hint(b)}")
    rows.append({"component": "python", "version": sys.version.split()[0], "pinned": ">=3.11",
                 "source": "interpreter", "path": sys.executable})
    from .provision import eureka  # optional (registry: eureka): absent is not a problem unless its env var is wrong
    ek = eureka.find()
    rows.append({"component": "eureka", "version": eureka.version(ek), "pinned": eureka.PINNED, "source": ek.source,
                 "path": ek.url or (str(ek.jar) if ek.jar else None)})
    if ek.source == f"env:{eureka.JAR_ENV}" and not ek.found:
        problems.append(f"eureka: {eureka.fix_hint(ek)}")
    from .runtime.docker import engine_status
    docker_ok, docker_line = engine_status()
    rows.append({"component": "docker", "version": docker_line if docker_ok else "-", "pinned": "-",
                 "source": "engine" if docker_ok else "unreachable", "path": os.environ.get("DOCKER_HOST")})
    if not docker_ok:
        # only the docker runtime needs it: reported, but not a failure of doctor
        print(f"meshbed doctor: {docker_line} (needed only for --runtime docker)", file=sys.stderr)
    if args.json:
        print(json.dumps({"components": rows, "problems": problems}, indent=2))
    else:
        for r in rows:
            print(f"  {r['component']:<10} {r['version']:<24} {r['source']:<22} {r['path'] or '-'}")
        for p in problems:
            print(f"meshbed doctor: {p}", file=sys.stderr)
    return 1 if problems else 0


# -- up / status / down ------------------------------------------------------

def _print_endpoints(ep: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(ep, indent=2), flush=True)
    else:
        print("mesh is up:\n" + endpoints_table(ep), flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from .topology import load
    topology = load(settings.topology)  # validate before anything starts
    _preflight(settings)  # before a supervisor and run dir exist
    if args.detach:
        return _up_detached(args, settings)
    from .attach import describe  # the endpoints, plus what `meshbed run --attach` needs
    from .mesh_build import bring_up
    from .supervisor_ctl import serve  # `meshbed ctl`: kill/pause/restart a component of this mesh
    progress = Progress()
    _prune_by_retention(settings, progress)
    _sigterm_as_interrupt()
    ready = False
    try:
        with bring_up(topology, settings, progress) as mesh, serve(mesh):
            ready = True
            _print_endpoints(describe(mesh), args.json)
            progress("press Ctrl-C to tear the mesh down")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        _quiet_interrupts()  # the teardown has run; a second Ctrl-C must not print a traceback
        if ready:
            progress("torn down")
            return 0
        print("meshbed up: interrupted during start-up; everything it started is torn down", file=sys.stderr, flush=True)
        _exit_now(130)
    return 0


def _quiet_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _exit_now(code: int) -> None:
    """Exit without joining worker threads still polling a component that is gone (they would hold the exit up
    to the ready timeout, and a Ctrl-C meanwhile prints a traceback from interpreter shutdown)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _up_detached(args: argparse.Namespace, settings: Settings) -> int:
    progress = Progress()
    sweep_orphans(settings.runs_dir)
    _prune_by_retention(settings, progress)
    _sigterm_as_interrupt()  # from before the run exists: a Ctrl-C at any moment tears down what was started
    state: RunState | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        state = RunState.create(settings.runs_dir, settings.runtime, str(settings.topology), detached=True)
        log = _open_private(state.run_dir / "supervisor.log")
        argv = [sys.executable, "-m", "meshbed.cli", "_supervise", "--run-dir", str(state.run_dir),
                "-f", str(settings.topology), "--runtime", settings.runtime,
                "--ready-timeout", str(settings.ready_timeout)]
        if args.state_dir:
            argv += ["--state-dir", str(args.state_dir)]
        argv += ["--controlplane", settings.controlplane]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=os.getcwd())
        finally:
            log.close()
        _record_supervisor(state, proc)
        return _await_ready(args, settings, state, proc, progress)
    except KeyboardInterrupt:
        _quiet_interrupts()
        if state is not None:
            if proc is not None:
                st = RunState.load(state.run_dir)  # as the supervisor may have written it meanwhile
                _record_supervisor(st, proc)  # never signal ourselves as "the supervisor"
                _stop_run(st, progress)
            else:  # interrupted before the supervisor existed: a supervisor that starts anyway sees 'down'
                state.set_status("down", "interrupted before start")
        print("meshbed up: interrupted during start-up; the detached run is torn down", file=sys.stderr, flush=True)
        return 130


def _record_supervisor(state: RunState, proc: subprocess.Popen[bytes]) -> None:
    from .runtime import procutil
    if (state.data.get("supervisor") or {}).get("pid") != proc.pid:
        state.update(lambda d: d.__setitem__("supervisor", {"pid": proc.pid, "start": procutil.start_time(proc.pid)}))


def _await_ready(args: argparse.Namespace, settings: Settings, state: RunState, proc: subprocess.Popen[bytes],
                 progress: Progress) -> int:
    """Relay the supervisor's progress until the mesh is ready (0) or did not come up (1, torn down)."""
    progress_file = state.run_dir / "progress.log"
    seen = 0
    deadline = time.monotonic() + settings.ready_timeout * 3
    while True:
        if progress_file.exists():
            lines = progress_file.read_text().splitlines()
            for line in lines[seen:]:
                print(line, file=sys.stderr, flush=True)
            seen = len(lines)
        st = RunState.load(state.run_dir)
        status = st.data.get("status")
        if status == "ready":
            _print_endpoints(st.data["endpoints"], args.json)
            return 0
        if status in ("failed", "down") or proc.poll() is not None:
            err = st.data.get("error") or f"supervisor exited with {proc.poll()}; see {state.run_dir}/supervisor.log"
            print(f"meshbed up: the mesh did not come up: {err}", file=sys.stderr)
            _stop_run(st, progress)
            return 1
        if time.monotonic() > deadline:
            print(f"meshbed up: not ready after {settings.ready_timeout * 3:.0f}s; tearing down", file=sys.stderr)
            _stop_run(st, progress)
            return 1
        time.sleep(0.1)


def cmd_supervise(args: argparse.Namespace) -> int:
    """The detached mesh's owner: brings it up, then holds it until SIGTERM."""
    settings = _settings(args)
    from .attach import describe  # the endpoints, plus what `meshbed run --attach` needs
    from .mesh_build import bring_up
    from .supervisor_ctl import serve  # `meshbed ctl`: kill/pause/restart a component of this mesh
    from .runtime import procutil
    from .topology import load
    state = RunState.load(Path(args.run_dir))
    if state.data.get("status") == "down":  # `meshbed down` swept the run while `up` was starting us: stay out
        return 0
    me = os.getpid()
    state.update(lambda d: d.__setitem__("supervisor", {"pid": me, "start": procutil.start_time(me)}))
    progress_path = state.run_dir / "progress.log"
    plog = Progress(stream=open(os.open(progress_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE),
                                "a", buffering=1))
    _sigterm_as_interrupt()
    try:
        with bring_up(load(settings.topology), settings, plog, state=state) as mesh, serve(mesh):
            state.update(lambda d: d.update(status="ready", endpoints=describe(mesh)))
            while True:
                signal.pause()
    except KeyboardInterrupt:
        plog("supervisor: torn down on request")
    except MeshbedError as exc:
        state.set_status("failed", str(exc))
        plog(f"supervisor: failed: {exc}")
        return 1
    except BaseException as exc:  # noqa: BLE001 - record any crash for `meshbed up`
        state.set_status("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:  # a stop that landed between a component's start and its record: nothing of the run may stay
        _quiet_interrupts()
        sweep_strays(state)
    state.set_status("down")
    return 0


def _stop_run(st: RunState, progress: Progress, grace: float = 30.0) -> list[str]:
    sup = st.data.get("supervisor") or {}
    from .runtime import procutil
    if st.supervisor_alive():
        procutil.signal_if_ours(int(sup["pid"]), sup.get("start"), signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end and procutil.is_ours(int(sup["pid"]), sup.get("start")):
            time.sleep(0.1)
        if procutil.is_ours(int(sup["pid"]), sup.get("start")):
            procutil.terminate(int(sup["pid"]), sup.get("start"), 1.0)
    leftovers = sweep_run(RunState.load(st.run_dir))
    if leftovers:
        progress(f"run {st.run_id}: swept leftover {', '.join(leftovers)}")
    return leftovers


def _active_runs(settings: Settings, run_id: str | None, problems: list[str] | None = None) -> list[RunState]:
    """Active runs (or the one asked for); a corrupt run.json is added to ``problems`` (or raised, for --run)."""
    if run_id:
        if not RUN_ID_RE.match(run_id):
            raise ConfigError(f"{show(run_id)!r} is not a run id", hint="`meshbed status` lists active runs")
        run_dir = settings.runs_dir / run_id
        if not (run_dir / "run.json").exists():
            raise ConfigError(f"no active run {run_id!r} in {show(settings.runs_dir)}",
                              hint="`meshbed status` lists active runs")
        r = RunState.load(run_dir)  # a corrupt run.json: one line naming the field
        if r.data.get("status") == "down":
            raise ConfigError(f"no active run {run_id!r} (it is down)", hint="`meshbed status` lists active runs")
        return [r]
    return [r for r in list_runs(settings.runs_dir, problems) if r.data.get("status") != "down"]


def _corrupt_runs_error(problems: list[str]) -> ConfigError:
    more = f" (and {len(problems) - 1} more corrupt runs)" if len(problems) > 1 else ""
    return ConfigError(problems[0] + more)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    problems: list[str] = []
    runs = _active_runs(settings, args.run, problems)
    out = []
    for r in runs:
        live = r.live_processes()
        procs = r.data.get("processes") or {}
        out.append({"run_id": r.run_id, "status": r.data.get("status"), "supervisor_alive": r.supervisor_alive(),
                    "processes": {n: {"pid": p["pid"], "alive": n in live} for n, p in procs.items()},
                    "endpoints": r.data.get("endpoints") or {}})
    if args.json:
        print(json.dumps(out if args.run is None else out[0], indent=2))
    elif not out:
        print("no active meshbed run")
    for r in out if not args.json else []:
        alive = sum(1 for p in r["processes"].values() if p["alive"])
        print(f"run {r['run_id']}: {r['status']}, supervisor {'alive' if r['supervisor_alive'] else 'DEAD'}, "
              f"{alive}/{len(r['processes'])} processes alive")
        if r["endpoints"]:
            print(endpoints_table(r["endpoints"]))
    if problems:  # the usable runs are listed above; a corrupt run.json is an error of its own
        raise _corrupt_runs_error(problems)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    settings = _settings(args)
    progress = Progress()
    if args.run and args.all:
        raise ConfigError("--run and --all exclude each other", hint="`meshbed down --run ID` or `meshbed down --all`")
    problems: list[str] = []
    runs = _active_runs(settings, args.run, problems)
    owned: list[RunState] = []
    if not args.run and not args.all:
        # by default: runs whose owner died (nothing of theirs should run), and the detached mesh when
        # there is one; several detached meshes: ask (on a terminal) or require --run/--all. Never a mesh
        # that a live pytest session or foreground `meshbed up` still owns.
        owned = [r for r in runs if not r.data.get("detached") and r.supervisor_alive()]
        for r in owned:
            progress(f"run {r.run_id}: owned by live process {r.data['supervisor']['pid']}; "
                     f"leaving it (stop that process, `meshbed down --run {r.run_id}` or `meshbed down --all`)")
        runs = [r for r in runs if r not in owned]
        detached = [r for r in runs if r.supervisor_alive()]
        if len(detached) > 1 and not _confirm(f"meshbed down: {len(detached)} detached meshes are up "
                                              f"({', '.join(r.run_id for r in detached)}); stop them all? [y/N] "):
            raise ConfigError(f"{len(detached)} detached meshes are up ({', '.join(r.run_id for r in detached)}); "
                              "name one with --run ID, or stop them all with --all", hint="`meshbed status` lists them")
    stopped = []
    for r in runs:
        progress(f"run {r.run_id}: stopping")
        _stop_run(r, progress)
        progress(f"run {r.run_id}: down")
        stopped.append(r.run_id)
    what = "every active run" if args.all else "detached and orphaned runs"
    if stopped:
        progress(f"meshbed down: stopped {len(stopped)} run(s) ({what}): {', '.join(stopped)}")
    else:
        progress("no detached meshbed run" if not args.all else "no active meshbed run")
    if owned:
        progress(f"meshbed down: left {len(owned)} run(s) owned by live processes; `meshbed down --all` stops them too")
    if problems:
        raise _corrupt_runs_error(problems)
    return 0


def _confirm(question: str) -> bool:
    """Ask on a terminal; anything but a terminal (CI, a pipe) is a no: the command then says what to pass."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    print(question, end="", file=sys.stderr, flush=True)
    try:
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except (OSError, UnicodeDecodeError):
        return False


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove finished run directories (never a live run's); the retention setting when no limit is given."""
    from .prune import parse_age, prune, human_size
    settings = _settings(args)
    keep = args.keep
    older = parse_age(args.older_than) if args.older_than is not None else None
    if keep is None and older is None:
        if settings.keep_runs <= 0:
            raise ConfigError("nothing to prune by: keep_runs is 0 (keep every run) and no --keep or --older-than "
                              "was given", hint="e.g. `meshbed prune --keep 5` or `meshbed prune --older-than 7d`")
        keep = settings.keep_runs
    res = prune(settings.runs_dir, keep=keep, older_than=older, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        print(json.dumps({"state_dir": str(settings.runs_dir), "dry_run": args.dry_run,
                          "removed": [r.path.name for r in res.removed], "freed_bytes": res.freed,
                          "kept": [r.path.name for r in res.kept],
                          "live": {r.path.name: r.live for r in res.live}, "problems": res.problems}, indent=2))
    else:
        for r in res.removed:
            print(f"{verb} {r.path.name} ({human_size(r.size)})")
        for r in res.live:
            print(f"left {r.path.name}: {r.live}")
        print(f"meshbed prune: {verb} {len(res.removed)} run director{'y' if len(res.removed) == 1 else 'ies'} "
              f"({human_size(res.freed)}) in {show(settings.runs_dir)}; kept {len(res.kept)} finished, "
              f"{len(res.live)} live")
    if res.problems:
        raise _corrupt_runs_error(res.problems)
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    """N up/down cycles with kill -9 at random stages; the leftovers counted; exit 1 when there are any."""
    from .soak import SoakOptions, soak
    from .topology import load
    settings = _settings(args)
    load(settings.topology)  # a bad topology: one line, before any cycle
    _preflight(settings)
    opts = SoakOptions(cycles=args.n, topology=str(settings.topology), runtime=settings.runtime,
                       state_dir=Path(args.state_dir) if args.state_dir else None, kill_fraction=args.kill_fraction,
                       seed=args.seed, ready_timeout=settings.ready_timeout if args.ready_timeout else 60.0,
                       max_seconds=args.max_seconds, keep_runs=settings.keep_runs)
    _sigterm_as_interrupt()  # SIGTERM too: the soak takes its current cycle's mesh down before it exits
    summary = soak(opts, Progress())
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if summary["ok"] else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_convergence_many, bench_startup
    settings = _settings(args)
    _preflight_paths(settings)
    progress = Progress()
    if args.what == "load-overhead":
        from .bench_load import RESULT_NAME, bench_load_overhead
        from .bench_load import write as write_load
        doc = bench_load_overhead(settings, args.n, args.window, args.users, args.rps, progress)
        out = write_load(doc, Path(args.out if args.out != "reports/bench-scale" else f"reports/{RESULT_NAME}"))
        progress(f"bench load-overhead: median {doc['median_overhead_pct']:+.1f} % of the achieved rate "
                 f"({doc['median_rps_bare']:.0f} -> {doc['median_rps_polled']:.0f} req/s) -> {out}")
        return 0
    if args.what == "scale":
        from .bench_scale import bench_scale, write
        from .compare import split_names
        cps = split_names(args.controlplane or "builtin")
        doc = bench_scale(settings, cps, args.sizes, changes=args.n, churn_rate=args.churn_rate,
                          churn_s=args.churn_s, progress=progress, max_heap_mb=args.envoy_max_heap_mb)
        j, h = write(doc, Path(args.out))
        progress(f"bench scale: {j} and {h}")
        return 0 if all("error" not in r for r in doc["rows"]) else 1
    from .compare import split_names
    cps = split_names(args.controlplane or settings.controlplane)
    if args.what == "all":
        from .bench_record import bench_all
        out = bench_all(settings, cps, args.n, progress, envoys=args.envoys, tiers=args.tiers or "",
                        out=Path(args.out if args.out != "reports/bench-scale" else "reports/bench-all.json"))
    elif args.what == "startup":
        out = bench_startup(settings, args.n, progress)
    else:
        out = bench_convergence_many(settings, cps, args.n, progress, breakdown=args.breakdown, envoys=args.envoys)
    print(json.dumps(out, indent=2))
    return 0


# -- run / report ------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from .run import RunOptions, run
    extra = list(args.pytest_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    # the paths first: a bad --out or state dir is one line before pytest (or anything) starts
    cli = {"runtime": args.runtime, "topology": args.topology, "profile": args.profile, "out_dir": args.out,
           "state_dir": args.state_dir, "ready_timeout": args.ready_timeout, "controlplane": args.controlplane,
           "load_workers": args.load_workers}
    settings = Settings.build(cli=cli)
    check_writable_dir(Path(settings.out_dir), "report directory (--out)")
    _preflight_paths(settings)
    opts = RunOptions(topology=args.topology, profile=args.profile, runtime=args.runtime, markers=args.markers,
                      keyword=args.keyword, out_dir=args.out, state_dir=args.state_dir, ready_timeout=args.ready_timeout,
                      controlplane=args.controlplane, suites=args.suites, catalogs=args.catalog, pytest_args=extra,
                      checks=args.checks, redact=not args.no_redact, load_workers=args.load_workers,
                      attach=args.attach)
    from .compare import compare, split_names
    names = split_names(args.controlplane or "")
    if args.attach and (len(names) > 1 or args.runtime):
        raise ConfigError("--attach judges the running mesh mesh.json describes: --controlplane lists and --runtime "
                          "do not apply", hint="leave them out, or run without --attach")
    if len(names) > 1:  # builtin,go: the catalog once per control plane, one comparison report
        return compare(names, opts)
    return run(opts)


def cmd_ctl(args: argparse.Namespace) -> int:
    from .supervisor_ctl import request
    request(args.run_dir, args.target, args.action)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from .controlplane.mutants import MUTANTS
    from .selftest import CI_MUTANTS, run_selftest
    if args.mutants:
        mutants = [m.strip() for m in args.mutants.split(",") if m.strip()]
    else:
        mutants = list(CI_MUTANTS) if args.tier == "ci" else list(MUTANTS)
    base = {"topology": args.topology, "profile": args.profile, "runtime": args.runtime,
            "state_dir": args.state_dir, "ready_timeout": args.ready_timeout}
    return run_selftest(mutants, Path(args.out), full=args.full,
                        control_markers="quick" if args.tier == "ci" else None, control=not args.no_control,
                        control_cp=args.control, base=base)


def cmd_report(args: argparse.Namespace) -> int:
    from .run import render
    if args.output is not None and (args.output.endswith(os.sep) or Path(args.output).is_dir()):
        raise ConfigError(f"{show(args.output)}: -o is a directory; give the HTML file to write, e.g. "
                          f"{show(Path(args.output) / 'conformance.html')}")
    out = render(args.json_file, args.output, redact=not args.no_redact)
    print(f"meshbed report: {out}")
    return 0


# -- entry point -------------------------------------------------------------

def _seconds(text: str) -> float:
    """--ready-timeout: a finite number of seconds > 0 (NaN would pass a `<= 0` check and disable every deadline)."""
    try:
        return check_seconds("seconds", parse_float("seconds", text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_FLAG_NAMES = {"topology": "-f", "json_file": "FILE.json", "output": "-o", "keyword": "-k", "markers": "-m",
               "checks": "--check"}


def _refuse_empty_values(args: argparse.Namespace) -> None:
    """An empty option value is a mistake (an unset shell variable), never 'use the default'."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) and dest != "pytest_args" else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            flag = _FLAG_NAMES.get(dest, "--" + dest.replace("_", "-"))
            raise ConfigError(f"{flag}: empty value", hint="leave the option out to use its default")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is one `--help` away)."""

    def error(self, message: str) -> Any:
        self.exit(2, error_line(f"{self.prog}: error: {message} (see `{self.prog} --help`)") + "\n")


def _sizes(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Envoy counts like 10,50,100") from None
    if not out or out[0] < 1 or out[-1] > 500:
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be between 1 and 500")
    return out


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _heap_mb(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v != 0 and not 16 <= v <= 65536:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or 16..65536 MB, got {v}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _mesh_option_flags(sp: argparse.ArgumentParser) -> None:
    """--registry / --tracing (docs/registries.md, docs/tracing-formats.md); they override the topology's fields."""
    sp.add_argument("--registry", choices=["consul", "eureka"],
                    help="where instances register (default: the topology's registry, else consul)")
    sp.add_argument("--tracing", choices=["w3c", "b3"],
                    help="trace headers and Envoy tracer: w3c (OTLP) or b3 (Zipkin) (default: the topology's, else w3c)")


def _export_mesh_options(args: argparse.Namespace) -> None:
    """As MESHBED_REGISTRY / MESHBED_TRACING, so Settings and every child (pytest, the supervisor) see them."""
    for name in ("registry", "tracing"):
        value = getattr(args, name, None)
        if value:
            os.environ[f"MESHBED_{name.upper()}"] = value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="meshbed", description="A testbed and conformance suite for Envoy service meshes.")
    p.add_argument("--version", action="version", version=f"meshbed {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state-dir", help="where run directories live (default ~/.cache/meshbed/runs; env MESHBED_STATE_DIR)")

    sp = sub.add_parser("provision", help="build the missing Go components into the cache")
    sp.add_argument("--only", action="extend", type=_provision_names, metavar="NAME[,NAME...]",
                    help="build only these, e.g. consul,toxiproxy (of consul, jaeger, toxiproxy, eureka; "
                    "eureka: the optional Eureka server, built only when named or first used)")
    sp.add_argument("--docker", action="store_true", help="also build the local images of the docker runtime")
    sp.set_defaults(fn=cmd_provision)

    sp = sub.add_parser("doctor", help="show each component, its version and where it comes from")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_doctor)

    sp = sub.add_parser("up", help="bring a mesh up from a topology file")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--runtime", help="process (default) or docker")
    sp.add_argument("--detach", action="store_true", help="return once ready; `meshbed down` tears it down")
    sp.add_argument("--json", action="store_true", help="print the endpoints as one JSON object")
    sp.add_argument("--ready-timeout", type=_seconds, help="seconds to wait for each start-up phase (default 90)")
    sp.add_argument("--controlplane", help="'reference' (default) or a command template for your control plane, "
                                           "with {xds_host} {xds_port} {consul_url} (and optionally {http_port}) placeholders")
    _mesh_option_flags(sp)
    common(sp)
    sp.set_defaults(fn=cmd_up)

    sp = sub.add_parser("_supervise")  # internal (up --detach); no help= keeps it out of `meshbed --help`
    sp.add_argument("--run-dir", required=True)
    sp.add_argument("-f", dest="topology")
    sp.add_argument("--runtime")
    sp.add_argument("--ready-timeout", type=_seconds)
    sp.add_argument("--controlplane")
    common(sp)
    sp.set_defaults(fn=cmd_supervise)

    sp = sub.add_parser("bench", help="benchmarks: startup time, convergence time (medians over N)")
    sp.add_argument("what", choices=["startup", "convergence", "scale", "all", "load-overhead"])
    sp.add_argument("--window", type=_seconds, default=5.0,
                    help="load-overhead: seconds per window, polling on or off (default 5; -n pairs, in one load run)")
    sp.add_argument("--users", type=_positive_int, default=10, help="load-overhead: Locust users (default 10)")
    sp.add_argument("--rps", type=float, default=0.0,
                    help="load-overhead: paced total rate (default 0: unpaced, the most the mesh manages)")
    sp.add_argument("--load-workers", metavar="N", help="load-overhead: Locust master + N workers (default 0)")
    sp.add_argument("--breakdown", action="store_true",
                    help="convergence: split each change into phases (Consul, diff, build, write+apply)")
    sp.add_argument("--envoys", type=_positive_int, default=10,
                    help="convergence: subscribed Envoys (watchers added up to this; default 10)")
    sp.add_argument("--tiers", metavar="quick,full",
                    help="all: also time `meshbed run` for these tiers (quick, full; default none)")
    sp.add_argument("-n", type=_positive_int, default=5,
                    help="runs (startup) or changes (convergence, scale); default 5")
    sp.add_argument("--sizes", type=_sizes, default=[10, 50, 100], metavar="N,N,...",
                    help="scale: Envoy counts to measure at (default 10,50,100)")
    sp.add_argument("--churn-rate", type=float, default=20.0, help="scale: churn events per second (default 20)")
    sp.add_argument("--churn-s", type=float, default=30.0, help="scale: churn storm length in seconds (default 30)")
    sp.add_argument("--out", default="reports/bench-scale", metavar="DIR",
                    help="scale: where JSON and HTML go; all: the JSON file (default reports/bench-all.json)")
    sp.add_argument("--envoy-max-heap-mb", type=_heap_mb, default=64, metavar="MB",
                    help="scale: each Envoy's heap budget in low-memory mode (default 64; 0: Envoy's defaults)")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--runtime")
    sp.add_argument("--controlplane")
    _mesh_option_flags(sp)
    common(sp)
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("run", help="bring the mesh up, run the conformance suites, write reports/conformance.{html,json}")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--profile", help="conformance profile YAML, or a packaged profile's name (default: default)")
    sp.add_argument("--runtime", help="process (default) or docker")
    sp.add_argument("-m", dest="markers", metavar="MARKERS", help="pytest marker expression, e.g. 'quick' or 'discovery and not slow'")
    sp.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression; check ids match as written "
                                                               "(-k DISC-1, a substring match)")
    sp.add_argument("--check", dest="checks", metavar="ID", action="append", default=[],
                    help="run only this catalog check, e.g. DISC-1 (exact id; may be given several times)")
    sp.add_argument("--no-redact", action="store_true",
                    help="keep home and cache paths and the host name in the reports (default: redacted)")
    sp.add_argument("--out", metavar="DIR", help="report directory (default reports/)")
    sp.add_argument("--ready-timeout", type=_seconds, help="seconds to wait for each start-up phase (default 90)")
    sp.add_argument("--controlplane", help="builtin (default), go, a command template for your control plane with {xds_host} {xds_port} {consul_url} (and optionally {http_port}) placeholders, or a comma-separated list of names to compare side by side")
    _mesh_option_flags(sp)
    sp.add_argument("--suites", metavar="DIR", action="append",
                    help="a directory of tests, or `builtin` (meshbed's own suites); may be given several times "
                         "(default: builtin)")
    sp.add_argument("--catalog", metavar="FILE", action="append", default=[],
                    help="a catalog file of your own checks (.yaml or .py; meshbed_catalog.* beside your tests is "
                         "found without it); may be given several times")
    sp.add_argument("--load-workers", metavar="N", help="the checks' Locust load from a master and N worker "
                                                         "processes (default 0: one process; docs/load.md)")
    sp.add_argument("--attach", metavar="MESH_JSON",
                    help="judge a running mesh meshbed did not start, described by MESH_JSON (what `meshbed up "
                         "--detach --json` prints is one); checks it cannot host are skipped (docs/attach.md)")
    sp.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments")
    common(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("ctl", help="kill, stop, pause, resume or restart a component of a running `meshbed up` mesh")
    sp.add_argument("--run-dir", required=True, help="the mesh's run directory (`meshbed status` shows it)")
    sp.add_argument("target", help="controlplane, consul, app:<instance> or sidecar:<instance>")
    sp.add_argument("action", choices=["kill", "stop", "restart", "pause", "resume"])
    sp.set_defaults(fn=cmd_ctl)

    sp = sub.add_parser("selftest", help="prove the suite can fail: run it against planted control-plane bugs")
    sp.add_argument("--mutants", help="comma-separated mutant names (default: all; see --list)")
    sp.add_argument("--tier", choices=["full", "ci"], default="full",
                    help="ci: two mutants and the quick tier as control (a few minutes)")
    sp.add_argument("--full", action="store_true", help="run the whole catalog per mutant, not just its targets")
    sp.add_argument("--no-control", action="store_true", help="skip the unmodified control run")
    sp.add_argument("--control", metavar="CONTROLPLANE",
                    help="run the control on this control plane instead (e.g. go); default: the builtin one, "
                         "through the external command-template mechanism")
    sp.add_argument("--out", default="reports/selftest", metavar="DIR", help="where the kill matrix goes")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--profile", help="conformance profile YAML")
    sp.add_argument("--runtime", help="process (default) or docker")
    sp.add_argument("--ready-timeout", type=_seconds, help="seconds to wait for each start-up phase (default 90)")
    common(sp)
    sp.set_defaults(fn=cmd_selftest)

    sp = sub.add_parser("report", help="re-render the HTML report from a results JSON")
    sp.add_argument("json_file", metavar="FILE.json", help="results JSON (e.g. reports/conformance.json)")
    sp.add_argument("-o", "--output", metavar="OUT.html", help="where to write (default: FILE.html)")
    sp.add_argument("--no-redact", action="store_true",
                    help="keep home and cache paths and the host name in the page (default: redacted)")
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("status", help="show detached meshes")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--run", help="one run id (default: all active runs)")
    common(sp)
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("soak", help="N up/down cycles with kill -9 at random stages; counts what is left behind")
    sp.add_argument("-n", type=_positive_int, default=10, help="cycles (default 10)")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--runtime", help="process (default) or docker")
    sp.add_argument("--kill-fraction", type=_fraction, default=0.3, metavar="F",
                    help="share of the cycles with a kill -9 (default 0.3)")
    sp.add_argument("--seed", type=int, help="random seed (stages and moments of the kills)")
    sp.add_argument("--ready-timeout", type=_seconds, help="seconds for each start-up phase (default 60)")
    sp.add_argument("--max-seconds", type=_seconds, default=3600.0, help="stop after this long (default 3600)")
    sp.add_argument("--state-dir", help="state directory of the soak (default: a fresh temporary one, removed "
                                        "when nothing was left over)")
    sp.set_defaults(fn=cmd_soak)

    sp = sub.add_parser("prune", help="remove finished run directories from the state dir (never a live run's)")
    sp.add_argument("--keep", type=_count, metavar="N", help="keep the newest N finished runs "
                                                               "(default: the keep_runs setting, MESHBED_KEEP_RUNS=20)")
    sp.add_argument("--older-than", metavar="AGE", help="remove finished runs older than AGE (e.g. 90m, 12h, 7d); "
                                                        "with --keep, only those beyond the newest N")
    sp.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    sp.add_argument("--json", action="store_true")
    common(sp)
    sp.set_defaults(fn=cmd_prune)

    sp = sub.add_parser("down", help="tear down the detached mesh and orphaned runs (one run with --run, "
                                     "every active run with --all)")
    sp.add_argument("--run", help="one run id")
    sp.add_argument("--all", action="store_true",
                    help="every active run, also those a live `meshbed up` or pytest session owns")
    common(sp)
    sp.set_defaults(fn=cmd_down)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, the handlers below say it
    try:
        args = build_parser().parse_args(argv)
        _refuse_empty_values(args)
        _export_mesh_options(args)
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(error_line(f"meshbed: error: {exc}"), file=sys.stderr)
        return 2
    except MeshbedError as exc:
        print(error_line(f"meshbed: error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _quiet_interrupts()
        print("meshbed: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # `meshbed status | head -1`: the reader is gone, which is no error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 128 + signal.SIGPIPE
    except Exception as exc:  # noqa: BLE001 - people get one line; MESHBED_DEBUG=1 gets the traceback
        if os.environ.get("MESHBED_DEBUG"):
            raise
        print(error_line(f"meshbed: internal error: {type(exc).__name__}: {exc} (rerun with MESHBED_DEBUG=1 for "
                         "the traceback, and please report it)"), file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
