"""`meshbed run`: bring the mesh up, run the conformance suites, write the reports, tear down.

pytest runs as a child process: the meshbed plugin's session fixture brings
the mesh up and tears it down, and the plugin writes the results JSON at
session end. This module then completes the JSON (phase timings, how it was
run), renders the HTML from it and prints a summary table.

Exit code: 0 when every selected check passed (skipped checks are reported
but are not failures), 1 when any check failed or errored or nothing could be
judged, 2 for bad input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import packaged
from .errors import ConfigError
from .settings import Settings

RESULTS_NAME = "conformance.json"
HTML_NAME = "conformance.html"
JUNIT_NAME = "junit.xml"


@dataclass
class RunOptions:
    topology: str | None = None
    profile: str | None = None
    runtime: str | None = None
    markers: str | None = None
    keyword: str | None = None
    out_dir: str | None = None
    state_dir: str | None = None
    ready_timeout: float | None = None
    controlplane: str | None = None
    # directories of tests, each a path or `builtin` (meshbed's own suites); none: builtin
    suites: str | list[str] | None = None
    catalogs: list[str] = field(default_factory=list)  # catalog files of the user's own checks (--catalog)
    checks: list[str] = field(default_factory=list)  # catalog ids to run (--check DISC-1); none: every selected test
    redact: bool = True  # home/cache paths and the host name out of the reports (--no-redact keeps them)
    pytest_args: list[str] = field(default_factory=list)
    log: str | None = None  # pytest's output goes here instead of the terminal (selftest)
    load_workers: int | str | None = None  # Locust workers for the checks' load (--load-workers); None: settings
    attach: str | None = None  # mesh.json of a running mesh to judge instead of starting one (--attach)


def repo_root(start: Path | None = None) -> Path | None:
    """The checkout holding suites/: next to the package's pyproject (editable install), else at/above the cwd."""
    cwd = (start or Path.cwd()).resolve()
    for cand in (Path(__file__).resolve().parents[2], cwd, *cwd.parents):
        if (cand / "pyproject.toml").is_file() and (cand / "suites").is_dir():
            return cand
    return None


def suites_dir(explicit: str | None = None) -> Path:
    """One suites directory: a path, or ``builtin`` (the default): meshbed's own suites."""
    if explicit and explicit != packaged.BUILTIN_SUITES:
        p = Path(explicit).resolve()
        if not p.exists():
            raise ConfigError(f"{explicit}: suites directory not found",
                              hint=f"give a directory of tests, or `{packaged.BUILTIN_SUITES}` for meshbed's own suites")
        return p
    shipped = packaged.builtin_suites(repo_root())
    if shipped is None:
        raise ConfigError("no suites/ directory found: not in this install, nor next to meshbed's pyproject.toml "
                          "or above the current directory",
                          hint="reinstall meshbed, or pass --suites DIR")
    return shipped


def suites_dirs(explicit: str | list[str] | None = None) -> list[Path]:
    """``--suites``, given any number of times (each a directory or ``builtin``); none given: builtin."""
    given = [explicit] if isinstance(explicit, str) else list(explicit or [])
    if any(not str(x).strip() for x in given):
        raise ConfigError("--suites: empty value", hint="give a directory of tests, or `builtin`")
    out: list[Path] = []
    for d in [suites_dir(x) for x in given] or [suites_dir()]:
        if d not in out:
            out.append(d)
    return out


def check_ids(given: list[str]) -> list[str]:
    """--check values as catalog ids (case as in the catalog); one line naming an unknown one."""
    from .checks.catalog import CATALOG
    by_upper = {cid.upper(): cid for cid in CATALOG}
    out = []
    for raw in given:
        cid = by_upper.get(str(raw).strip().upper())
        if cid is None:
            near = [c for c in CATALOG if c.split("-")[0] == str(raw).strip().upper().split("-")[0]] or list(CATALOG)
            raise ConfigError(f"--check {raw!r}: not a catalog check id; known: {', '.join(near[:12])}"
                              + (" ..." if len(near) > 12 else ""),
                              hint="ids as in the catalog, e.g. --check DISC-1 (repeatable)")
        if cid not in out:
            out.append(cid)
    return out


def _existing(value: str | Path, what: str) -> Path:
    p = Path(value)
    if not p.exists():
        raise ConfigError(f"{value}: {what} not found")
    return p.resolve()


def _pytest_cwd(suites: list[Path], builtin: Path | None, root: Path | None) -> Path:
    """Where pytest runs (its --rootdir): the checkout when every suite is in it; else beside the user's tests."""
    if root is not None and all(d.is_relative_to(root) for d in suites):
        return root
    mine = [d for d in suites if d != builtin]
    if len(mine) == 1:
        return mine[0].parent
    return Path.cwd().resolve()


@dataclass
class Plan:
    settings: Settings
    topology: Path
    profile: Path
    suites: Path  # the first of suites_dirs
    out_dir: Path
    results: Path
    html: Path
    junit: Path
    argv: list[str]
    cwd: Path
    log: Path | None = None
    suites_dirs: list[Path] = field(default_factory=list)
    catalogs: list[Path] = field(default_factory=list)


def plan(opts: RunOptions) -> Plan:
    """Validate the inputs (ConfigError on anything wrong) and build the pytest command line."""
    cli = {"runtime": opts.runtime, "topology": opts.topology, "profile": opts.profile, "out_dir": opts.out_dir,
           "state_dir": opts.state_dir, "ready_timeout": opts.ready_timeout,
           "controlplane": opts.controlplane, "load_workers": opts.load_workers}
    # not given: the packaged default topology and profile; a bare name (-f basic) is a packaged one
    settings = packaged.with_defaults(Settings.build(cli=cli), cli=cli)
    root = repo_root()
    suites = suites_dirs(opts.suites)
    cwd = _pytest_cwd(suites, packaged.builtin_suites(root), root)
    topology = _existing(settings.topology, "topology file")
    attach_json: Path | None = None
    if opts.attach:  # a bad mesh.json is one line here; its topology is the one judged unless -f names another
        from . import attach
        attach_json = _existing(opts.attach, "mesh description (--attach)")
        doc = attach.load(attach_json)
        if not opts.topology:
            topology = attach.topology_path(doc, attach_json)
    profile = _existing(settings.profile, "profile")
    # the user's own checks, before the profile that sets their thresholds is read
    from .checks import catalog
    if any(not str(c).strip() for c in opts.catalogs):
        raise ConfigError("--catalog: empty value", hint="give a catalog file (.yaml or .py)")
    catalogs = [_existing(c, "catalog file") for c in opts.catalogs]
    catalogs += [c for c in catalog.discover([d for d in suites if d != packaged.builtin_suites(root)], cwd)
                 if c not in catalogs]
    for c in catalogs:
        catalog.load_file(c)
    # fail fast, with the loaders' one-line messages, before anything starts
    from .checks.profile import load as load_profile
    from .runtime import runtime_names
    from .topology import load as load_topology
    load_topology(topology)
    try:
        load_profile(profile)
    except ConfigError as exc:
        if "not a catalog check id" not in str(exc) or exc.hint:
            raise
        raise ConfigError(exc.args[0], hint="declare your own checks in a meshbed_catalog.yaml (or .py) beside "
                                            "your tests, or pass --catalog FILE (docs/writing-tests.md)") from None
    checks = check_ids(opts.checks)
    from .components.controlplane import template_for
    if attach_json is None:  # attached: nothing of the mesh starts here (watchers and scale-ups are local processes)
        template_for(settings.controlplane)  # a bad name fails here; a named one (go) is built here if missing
    if settings.runtime not in runtime_names():
        raise ConfigError(f"unknown runtime {settings.runtime!r}; available: {', '.join(runtime_names())}")
    # the same environment checks as `meshbed up`, before pytest starts: binaries found and runnable, state dir
    # writable, a loopback port bindable, the runtime usable (Docker engine): one line and exit 2, never 13 errors
    from .preflight import check_environment
    if attach_json is None:
        check_environment(settings)
    else:
        from .safeio import check_writable_dir
        check_writable_dir(settings.runs_dir, "state directory")
    out_dir = Path(settings.out_dir).resolve()
    results, html, junit = out_dir / RESULTS_NAME, out_dir / HTML_NAME, out_dir / JUNIT_NAME
    # --rootdir: the option values below are absolute paths, which pytest would otherwise count in its rootdir guess
    argv = [sys.executable, "-m", "pytest", *map(str, suites), "--rootdir", str(cwd), "-p", "no:locust",
            "-p", "no:cacheprovider", "-p", "meshbed.checkselect",
            "--meshbed-topology", str(topology), "--meshbed-profile", str(profile),
            "--meshbed-runtime", settings.runtime, "--meshbed-results", str(results),
            "--meshbed-ready-timeout", str(settings.ready_timeout), "--meshbed-controlplane", settings.controlplane,
            "--junitxml", str(junit)]
    for c in catalogs:
        argv += ["--meshbed-catalog", str(c)]
    for cid in checks:
        argv += ["--meshbed-check", cid]
    if str(settings.state_dir) not in ("", "."):
        argv += ["--meshbed-state-dir", str(Path(settings.state_dir).resolve())]
    if settings.load_workers:
        argv += ["--meshbed-load-workers", str(settings.load_workers)]
    if attach_json is not None:
        argv += ["--meshbed-attach", str(attach_json)]
    if opts.markers:
        argv += ["-m", opts.markers]
    if opts.keyword:
        argv += ["-k", opts.keyword]
    argv += list(opts.pytest_args)
    return Plan(settings, topology, profile, suites[0], out_dir, results, html, junit, argv, cwd,
                Path(opts.log) if opts.log else None, suites, catalogs)


def _run_pytest(p: Plan, stream: TextIO) -> int:
    """pytest in the foreground, its output straight to the terminal; Ctrl-C/SIGTERM let it tear down.

    pytest runs in a session of its own, so a Ctrl-C reaches this process only; it is passed on as SIGTERM.
    Before pytest is configured, SIGTERM ends it quietly (nothing has started: the mesh comes up with the first
    test), never with the traceback of an import a SIGINT would print; once configured, the meshbed plugin
    turns SIGTERM into KeyboardInterrupt and pytest tears the mesh down.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = open(p.log, "w") if p.log else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(p.argv, cwd=p.cwd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
    finally:
        if out is not None:
            out.close()
    old, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def on_term(signum: int, frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # pytest tears the mesh down (the plugin's SIGTERM handler)
    signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        while True:
            try:
                return proc.wait() if not interrupted else 130
            except KeyboardInterrupt:
                interrupted = True
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # one Ctrl-C is enough; the teardown must finish
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                print("meshbed run: interrupted; waiting for pytest to tear the mesh down", file=stream, flush=True)
                try:
                    proc.wait(timeout=120)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    proc.kill()
                    proc.wait()
                return 130
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_table(doc: dict[str, Any]) -> str:
    from .report import key_figures
    rows = [("ID", "CHECK", "FIGURE", "THRESHOLD", "VERDICT")]
    for c in doc.get("checks") or []:
        kf = key_figures(c)
        fig = f"{kf[0]['name']} = {kf[0]['text']}" if kf else "-"
        thr = kf[0]["threshold"] if kf else "-"
        if len(kf) > 1:
            fig += f" (+{len(kf) - 1})"
        verdict = c.get("verdict", "").upper()
        if c.get("verdict") != "pass" and c.get("reason"):
            verdict += f": {c['reason']}"
        rows.append((str(c.get("id")), _cell(str(c.get("title")), 44), _cell(fig, 40), _cell(thr, 16), _cell(verdict, 90)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


def run(opts: RunOptions, stream: TextIO | None = None) -> int:
    from . import report
    stream = stream or sys.stdout
    p = plan(opts)
    from .prune import apply_retention
    apply_retention(p.settings.runs_dir, p.settings.keep_runs)  # the retention setting, before a new run dir
    p.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (p.results, p.html):  # never report a previous run's results as this one's
        stale.unlink(missing_ok=True)
    print(f"meshbed run: {p.topology.name} on {p.settings.runtime}, profile {p.profile.name}, "
          f"suites {', '.join(map(str, p.suites_dirs))}"
          + (f", -m {opts.markers!r}" if opts.markers else ""), file=stream, flush=True)
    t0 = time.monotonic()
    rc = _run_pytest(p, stream)
    suites_s = time.monotonic() - t0
    if rc == 130:
        print("meshbed run: interrupted", file=sys.stderr)
        return 130
    if rc == 4:  # pytest usage error: bad -m expression, unknown option...
        raise ConfigError("pytest rejected the arguments (its message is above)",
                          hint="check -m/-k expressions; markers: quick, discovery, lb, tracing, resilience")
    if not p.results.exists():
        if rc == 5:
            why = ("no test was selected (markers: quick, discovery, lb, tracing, resilience; a check by its id: "
                   "--check DISC-1)")
        elif rc < 0:
            why = f"pytest was killed by signal {-rc} before it wrote results"
        else:
            why = f"pytest exited with {rc} and no check was judged"
        print(f"meshbed run: no results: {why}; nothing to report", file=sys.stderr)
        return 1
    doc = report.load_document(p.results)
    doc.setdefault("phases", {})["suites (pytest wall time, incl. mesh up/down)"] = round(suites_s, 3)
    doc["run"] = {"argv": [str(a) for a in p.argv[1:]], "pytest_exit_code": rc, "markers": opts.markers,
                  "suites_dir": str(p.suites), "suites_dirs": [str(d) for d in p.suites_dirs],
                  "catalogs": [str(c) for c in p.catalogs], "junit_xml": str(p.junit), "html": str(p.html)}
    if opts.redact:
        from .report.redact import redact
        doc = redact(doc)
    t1 = time.monotonic()
    report.render_html(doc)
    doc["phases"]["report render"] = round(time.monotonic() - t1, 3)
    report.write_json(doc, p.results)
    report.write_html(doc, p.html)

    s = doc.get("summary") or {}
    print("\n" + summary_table(doc), file=stream)
    counts = f"{s.get('pass', 0)} pass, {s.get('fail', 0)} fail, {s.get('error', 0)} error, {s.get('skipped', 0)} skipped"
    if s.get("skipped"):
        counts += " (skipped checks are not failures, but were not verified)"
    print(f"\nmeshbed run: {counts}; {len(s.get('not_run') or [])} catalog checks not selected", file=stream)
    print(f"  report: {p.html}\n  json:   {p.results}\n  junit:  {p.junit}", file=stream, flush=True)
    verdict = s.get("verdict")
    if verdict == "pass" and rc == 0:
        print("meshbed run: PASS", file=stream, flush=True)
        return 0
    if verdict == "pass":
        print(f"meshbed run: FAIL: every check passed but pytest exited with {rc} (see its output above)", file=stream, flush=True)
    elif verdict == "none":
        print("meshbed run: FAIL: no check ran to a verdict", file=stream, flush=True)
    else:
        print("meshbed run: FAIL", file=stream, flush=True)
    return 1


def render(json_path: str | Path, out: str | Path | None = None, redact: bool = True) -> Path:
    """`meshbed report`: re-render the HTML from a results JSON (home/cache paths and host name redacted)."""
    from . import report
    doc = report.load_document(json_path)
    if redact:
        from .report.redact import redact as redacted
        doc = redacted(doc)
    out = Path(out) if out else Path(json_path).with_suffix(".html")
    return report.write_html(doc, out)
