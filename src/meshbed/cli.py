"""The `meshbed` command: provision, doctor, up, status, down."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"meshbed: interrupted\n")
    os._exit(130)


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
from .runtime.state import FILE_MODE, RUN_ID_RE, RunState, list_runs, sweep_orphans, sweep_run  # noqa: E402
from .safeio import check_writable_dir, show  # noqa: E402
from .settings import Settings, check_seconds, parse_float  # noqa: E402


def _settings(args: argparse.Namespace) -> Settings:
    cli = {k: getattr(args, k, None) for k in ("runtime", "topology", "state_dir", "ready_timeout", "controlplane")}
    settings = Settings.build(cli=cli)
    if hasattr(args, "topology"):  # up, _supervise, bench: -f is a file or an example's name; none given: basic
        from .packaged import with_defaults
        settings = with_defaults(settings, cli=cli)
    return settings


def _check_binary_overrides() -> None:
    """MESHBED_ENVOY & co. must name a file: a directory is one line here, not a 'chmod +x' hint later."""
    from .provision.binaries import COMPONENTS
    from .provision.versions import GO_BINARIES
    for name in COMPONENTS:
        var = "MESHBED_ENVOY" if name == "envoy" else GO_BINARIES[name].env_var
        value = os.environ.get(var)
        if not value:
            continue
        p = Path(value)
        if p.is_dir():
            raise ConfigError(f"{var}={show(value)} is a directory; point it at the {name} binary itself",
                              hint=f"unset {var} to use meshbed's own {name}")
        if p.is_file() and not os.access(p, os.X_OK):
            raise ConfigError(f"{var}={show(value)} is not executable", hint=f"chmod +x {show(value)}")


def _preflight_paths(settings: Settings) -> None:
    """Before anything starts: the binaries given by environment, and a usable state directory."""
    _check_binary_overrides()
    check_writable_dir(settings.runs_dir, "state directory")


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

def cmd_provision(args: argparse.Namespace) -> int:
    from .provision import build_missing
    progress = Progress()
    build_missing(args.only or None, progress)
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
    _preflight_paths(settings)
    if args.detach:
        from .runtime import runtime_factory
        runtime_factory(settings.runtime).preflight()  # before a supervisor and run dir exist
        return _up_detached(args, settings)
    from .mesh_build import bring_up, describe
    progress = Progress()
    _sigterm_as_interrupt()
    ready = False
    try:
        with bring_up(topology, settings, progress) as mesh:
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
    state = RunState.create(settings.runs_dir, settings.runtime, str(settings.topology), detached=True)
    log = _open_private(state.run_dir / "supervisor.log")
    argv = [sys.executable, "-m", "meshbed.cli", "_supervise", "--run-dir", str(state.run_dir),
            "-f", str(settings.topology), "--runtime", settings.runtime,
            "--ready-timeout", str(settings.ready_timeout)]
    if args.state_dir:
        argv += ["--state-dir", str(args.state_dir)]
    argv += ["--controlplane", settings.controlplane]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=os.getcwd())
    log.close()
    from .runtime import procutil
    state.update(lambda d: d.__setitem__("supervisor", {"pid": proc.pid, "start": procutil.start_time(proc.pid)}))
    progress_file = state.run_dir / "progress.log"
    _sigterm_as_interrupt()
    seen = 0
    deadline = time.monotonic() + settings.ready_timeout * 3
    try:
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
    except KeyboardInterrupt:
        _stop_run(RunState.load(state.run_dir), progress)
        print("meshbed up: interrupted during start-up; the detached run is torn down", file=sys.stderr, flush=True)
        return 130


def cmd_supervise(args: argparse.Namespace) -> int:
    """The detached mesh's owner: brings it up, then holds it until SIGTERM."""
    settings = _settings(args)
    from .mesh_build import bring_up, describe
    from .runtime import procutil
    from .topology import load
    state = RunState.load(Path(args.run_dir))
    me = os.getpid()
    state.update(lambda d: d.__setitem__("supervisor", {"pid": me, "start": procutil.start_time(me)}))
    progress_path = state.run_dir / "progress.log"
    plog = Progress(stream=open(os.open(progress_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE),
                                "a", buffering=1))
    _sigterm_as_interrupt()
    try:
        with bring_up(load(settings.topology), settings, plog, state=state) as mesh:
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
        # by default: detached meshes, and runs whose owner died; never a mesh
        # that a live pytest session or foreground `meshbed up` still owns
        owned = [r for r in runs if not r.data.get("detached") and r.supervisor_alive()]
        for r in owned:
            progress(f"run {r.run_id}: owned by live process {r.data['supervisor']['pid']}; "
                     f"leaving it (stop that process, `meshbed down --run {r.run_id}` or `meshbed down --all`)")
        runs = [r for r in runs if r not in owned]
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


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_convergence, bench_startup
    settings = _settings(args)
    _preflight_paths(settings)
    progress = Progress()
    if args.what == "scale":
        from .bench_scale import bench_scale, write
        from .compare import split_names
        cps = split_names(args.controlplane or "builtin")
        doc = bench_scale(settings, cps, args.sizes, changes=args.n, churn_rate=args.churn_rate,
                          churn_s=args.churn_s, progress=progress)
        j, h = write(doc, Path(args.out))
        progress(f"bench scale: {j} and {h}")
        return 0 if all("error" not in r for r in doc["rows"]) else 1
    if args.what == "startup":
        out = bench_startup(settings, args.n, progress)
    else:
        out = bench_convergence(settings, args.n, progress)
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
           "state_dir": args.state_dir, "ready_timeout": args.ready_timeout, "controlplane": args.controlplane}
    settings = Settings.build(cli=cli)
    check_writable_dir(Path(settings.out_dir), "report directory (--out)")
    _preflight_paths(settings)
    opts = RunOptions(topology=args.topology, profile=args.profile, runtime=args.runtime, markers=args.markers,
                      keyword=args.keyword, out_dir=args.out, state_dir=args.state_dir, ready_timeout=args.ready_timeout,
                      controlplane=args.controlplane, suites=args.suites, catalogs=args.catalog, pytest_args=extra)
    from .compare import compare, split_names
    names = split_names(args.controlplane or "")
    if len(names) > 1:  # builtin,go: the catalog once per control plane, one comparison report
        return compare(names, opts)
    return run(opts)


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
    out = render(args.json_file, args.output)
    print(f"meshbed report: {out}")
    return 0


# -- entry point -------------------------------------------------------------

def _seconds(text: str) -> float:
    """--ready-timeout: a finite number of seconds > 0 (NaN would pass a `<= 0` check and disable every deadline)."""
    try:
        return check_seconds("seconds", parse_float("seconds", text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_FLAG_NAMES = {"topology": "-f", "json_file": "FILE.json", "output": "-o", "keyword": "-k", "markers": "-m"}


def _refuse_empty_values(args: argparse.Namespace) -> None:
    """An empty option value is a mistake (an unset shell variable), never 'use the default'."""
    for dest, value in vars(args).items():
        if isinstance(value, str) and not value.strip():
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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="meshbed", description="A testbed and conformance suite for Envoy service meshes.")
    p.add_argument("--version", action="version", version=f"meshbed {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state-dir", help="where run directories live (default ~/.cache/meshbed/runs; env MESHBED_STATE_DIR)")

    sp = sub.add_parser("provision", help="build the missing Go components into the cache")
    sp.add_argument("--only", action="append", choices=["consul", "jaeger", "toxiproxy"], help="build only these")
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
    sp.add_argument("what", choices=["startup", "convergence", "scale"])
    sp.add_argument("-n", type=_positive_int, default=5,
                    help="runs (startup) or changes (convergence, scale); default 5")
    sp.add_argument("--sizes", type=_sizes, default=[10, 50, 100], metavar="N,N,...",
                    help="scale: Envoy counts to measure at (default 10,50,100)")
    sp.add_argument("--churn-rate", type=float, default=20.0, help="scale: churn events per second (default 20)")
    sp.add_argument("--churn-s", type=float, default=30.0, help="scale: churn storm length in seconds (default 30)")
    sp.add_argument("--out", default="reports/bench-scale", metavar="DIR", help="scale: where JSON and HTML go")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--runtime")
    sp.add_argument("--controlplane")
    common(sp)
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("run", help="bring the mesh up, run the conformance suites, write reports/conformance.{html,json}")
    sp.add_argument("-f", "--file", dest="topology", help="topology YAML, or an example's name (default: basic)")
    sp.add_argument("--profile", help="conformance profile YAML, or a packaged profile's name (default: default)")
    sp.add_argument("--runtime", help="process (default) or docker")
    sp.add_argument("-m", dest="markers", metavar="MARKERS", help="pytest marker expression, e.g. 'quick' or 'discovery and not slow'")
    sp.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression")
    sp.add_argument("--out", metavar="DIR", help="report directory (default reports/)")
    sp.add_argument("--ready-timeout", type=_seconds, help="seconds to wait for each start-up phase (default 90)")
    sp.add_argument("--controlplane", help="builtin (default), go, a command template for your control plane with {xds_host} {xds_port} {consul_url} (and optionally {http_port}) placeholders, or a comma-separated list of names to compare side by side")
    sp.add_argument("--suites", metavar="DIR", action="append",
                    help="a directory of tests, or `builtin` (meshbed's own suites); may be given several times "
                         "(default: builtin)")
    sp.add_argument("--catalog", metavar="FILE", action="append", default=[],
                    help="a catalog file of your own checks (.yaml or .py; meshbed_catalog.* beside your tests is "
                         "found without it); may be given several times")
    sp.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments")
    common(sp)
    sp.set_defaults(fn=cmd_run)

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
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("status", help="show detached meshes")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--run", help="one run id (default: all active runs)")
    common(sp)
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("down", help="tear down detached meshes and orphaned runs (or one run with --run, "
                                     "or every active run with --all)")
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
