"""The bad-input corpus (issue 14): every bad input gets one line, exit 2, and leaves nothing behind.

Cases live in tests/data/bad_inputs/, one line or one file per case:

- ``topology/*.yaml``: bad topologies (first line ``# expect: <text>``). All are loaded in-process
  (``topology.load``: a ConfigError of one line naming the problem); a representative set also runs as
  ``meshbed up -f <file>``.
- ``cli.txt``: bad arguments, settings, environment and paths, one per line.
- ``report/``: bad results documents for ``meshbed report`` (expectations in ``report/EXPECT``).
- ``run_state/``: corrupt run.json files for ``meshbed status|down --run`` (``run_state/EXPECT``).
- ``profile/*.yaml``: bad profiles for ``meshbed run --profile``; those marked ``# pending:`` are
  xfail until the profile loader reads through meshbed.safeio.

Every subprocess case asserts: exit code 2, exactly one line on stderr, no "internal error" and no
traceback, no process left that mentions the case's directory, no run directory created, no stray
temp file. The subprocesses run on a small thread pool (they are mostly interpreter start-up), once
per session, and each case is then judged as its own test item.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshbed import topology
from meshbed.console import error_line
from meshbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "bad_inputs"
GOOD_TOPOLOGY = ROOT / "examples" / "basic.yaml"
GOOD_REPORT = ROOT / "tests" / "data" / "conformance-disc1.json"
PENDING_PROFILE = "profile strict loading pending"
CASE_TIMEOUT = 30.0
PENDING_TIMEOUT = 3.0  # a pending case may still hang on today's loader (an alias bomb): it is xfail anyway
WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclasses.dataclass
class Case:
    id: str
    args: list[str]
    expect: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    pending: str = ""  # an xfail reason
    setup: str = ""  # "run_state:<file>" installs a run.json in the case's state dir


def _expect_line(raw: bytes) -> tuple[str, str]:
    lines = raw.split(b"\n", 2)
    m = re.match(rb"# expect: (.*)", lines[0])
    assert m, "a case file starts with '# expect: <text>'"
    pending = ""
    if len(lines) > 1 and lines[1].startswith(b"# pending:"):
        pending = lines[1].split(b":", 1)[1].strip().decode()
    return m.group(1).decode().strip(), pending


def _unescape(token: str) -> str:
    return "" if token == "%%" else token.replace("%20", " ")


def topology_files() -> list[Path]:
    return sorted((DATA / "topology").glob("*.yaml"))


# the topology cases that also run through the CLI: every strict-loading class, and a sample of the rest
_CLI_TOPOLOGY = re.compile(r"dup-service\b|dup-top|alias|bomb|deep|nan-|inf-|overflow|huge-integer|too-many|utf8|"
                           r"nul-byte|control-char|python-tag|empty-file|top-is-list|replicas-string|calls-cycle-2|"
                           r"policy-lb-unknown|instances-zone-empty|ingress-prefix-no-slash|chaos-links-unknown|"
                           r"mesh-sampling-120|yaml-tab")


def cli_cases() -> list[Case]:
    cases: list[Case] = []
    for line in (DATA / "cli.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, env, args, expect = (part.strip() for part in line.split("|"))
        env_map = dict(_unescape(kv).split("=", 1) for kv in env.split()) if env else {}
        cases.append(Case(f"cli-{name}", [_unescape(a) for a in args.split()], expect, env_map))
    for path in topology_files():
        if _CLI_TOPOLOGY.search(path.stem):
            expect, _ = _expect_line(path.read_bytes())
            cases.append(Case(f"topology-{path.stem}", ["up", "-f", str(path)], expect))
    for line in (DATA / "report" / "EXPECT").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, expect = (s.strip() for s in line.split(":", 1))
            cases.append(Case(f"report-{name}", ["report", str(DATA / "report" / name), "-o", "{tmp}/out.html"], expect))
    for line in (DATA / "run_state" / "EXPECT").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, cmd, expect = line.split(None, 2)
            cases.append(Case(f"run-state-{name}", [cmd, "--run", name], expect.strip(), setup=f"run_state:{name}"))
    for path in sorted((DATA / "profile").glob("*.yaml")):
        expect, pending = _expect_line(path.read_bytes())
        cases.append(Case(f"profile-{path.stem}", ["run", "--profile", str(path), "-f", "{topology}",
                                                   "--suites", "{suites}"], expect, pending=pending))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case names must be unique"
    return cases


CLI_CASES = cli_cases()


def test_corpus_size():
    """At least 100 cases, covering every class of bad input of issue 14."""
    n = len(topology_files()) + len([c for c in CLI_CASES if not c.id.startswith("topology-")])
    assert n >= 100, n
    prefixes = {c.id.split("-")[0] for c in CLI_CASES}
    assert {"cli", "topology", "report", "run", "profile"} <= prefixes


# -- shared inputs ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    shared = root / "shared"
    shared.mkdir()
    (shared / "afile").write_text("not a directory\n")
    (shared / "adir").mkdir()
    os.mkfifo(shared / "fifo")
    (shared / "suites").mkdir()
    text = "services:\n" + "".join(f"  s{i}: {{replicas: 1}}\n" for i in range(60_000))
    (shared / "huge.yaml").write_text(text[: (1 << 20) + 100_000])
    with open(shared / "huge.json", "wb") as fh:  # sparse: 300 MB by its size, nothing on disk
        fh.truncate(300 << 20)
    (shared / "zero").symlink_to("/dev/zero")
    (shared / "loop").symlink_to(shared / "loop")
    (shared / "nonexec").write_text("#!/bin/sh\n")
    os.chmod(shared / "nonexec", 0o644)
    (shared / "broken").write_text("#!/bin/sh\necho 'cannot execute binary file' >&2\nexit 126\n")
    os.chmod(shared / "broken", 0o755)
    corrupt = shared / "corrupt" / "20200101-000000-c0ffee"
    corrupt.mkdir(parents=True)
    (corrupt / "run.json").write_text('{"run_id": "20200101-000000-c0ffee", "processes": {"envoy": {"pid": "x"}}}')
    (root / "cases").mkdir()
    return root


def _placeholders(root: Path, case_dir: Path) -> dict[str, str]:
    shared = root / "shared"
    return {"tmp": str(case_dir), "state": str(case_dir / "state"), "file": str(shared / "afile"),
            "dir": str(shared / "adir"), "fifo": str(shared / "fifo"), "topology": str(GOOD_TOPOLOGY),
            "report": str(GOOD_REPORT), "suites": str(shared / "suites"), "huge_yaml": str(shared / "huge.yaml"),
            "huge_json": str(shared / "huge.json"), "zero_link": str(shared / "zero"),
            "loop_link": str(shared / "loop"), "nonexec": str(shared / "nonexec"), "broken": str(shared / "broken"),
            "corrupt_state": str(shared / "corrupt")}


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def _meshbed() -> list[str]:
    script = Path(sys.executable).with_name("meshbed")
    return [str(script)] if script.exists() else [sys.executable, "-m", "meshbed.cli"]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_") or k == "MESHBED_CACHE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def processes_mentioning(path: Path) -> list[str]:
    """Live processes whose command line or working directory lies under ``path``."""
    needle = str(path)
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        if needle in cmd or cwd == needle or cwd.startswith(needle + "/"):
            out.append(f"{entry}: {cmd[:160]}")
    return out


@dataclasses.dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    leftovers: list[str]
    run_dirs: list[str]
    temp_files: list[str]
    timed_out: bool = False


def _run_case(case: Case, root: Path) -> Outcome:
    case_dir = root / "cases" / case.id
    case_dir.mkdir()
    values = _placeholders(root, case_dir)
    state = case_dir / "state"
    if case.setup.startswith("run_state:"):
        name = case.setup.split(":", 1)[1]
        (state / name).mkdir(parents=True)
        shutil.copy(DATA / "run_state" / f"{name}.json", state / name / "run.json")
    env = _base_env()
    env["MESHBED_STATE_DIR"] = str(state)
    env.update({k: _fill(v, values) for k, v in case.env.items()})
    argv = _meshbed() + [_fill(a, values) for a in case.args]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=case_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=PENDING_TIMEOUT if case.pending else CASE_TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        # it got further than validation: take down whatever it started
        subprocess.run(_meshbed() + ["down", "--all", "--state-dir", str(state)], env=env, capture_output=True,
                       timeout=120)
    seconds = time.monotonic() - t0
    leftovers = processes_mentioning(case_dir)
    for _ in range(20):  # a process that is on its way out gets a moment
        if not leftovers:
            break
        time.sleep(0.1)
        leftovers = processes_mentioning(case_dir)
    run_dirs = [str(p.parent) for p in state.glob("*/run.json")] if not case.setup else \
        [str(p.parent) for p in state.glob("*/run.json") if p.parent.name != case.setup.split(":", 1)[1]]
    temp_files = [str(p) for base in (case_dir, root / "shared") for p in base.rglob("*.tmp")]
    return Outcome(proc.returncode, out, err, seconds, leftovers, run_dirs, temp_files, timed_out)


@pytest.fixture(scope="module")
def outcomes(corpus_root: Path, request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Run every selected subprocess case once, on a small pool; the items then judge one case each."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)}
    cases = [c for c in CLI_CASES if c.id in selected] or CLI_CASES
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = dict(zip([c.id for c in cases], pool.map(lambda c: _run_case(c, corpus_root), cases)))
    wall = time.monotonic() - t0
    slowest = sorted(results.items(), key=lambda kv: -kv[1].seconds)[:3]
    print(f"\nbad-input corpus: {len(results)} subprocess cases in {wall:.1f}s on {WORKERS} workers; slowest: "
          + ", ".join(f"{k} {v.seconds:.1f}s" for k, v in slowest))
    return results


def _judge(case: Case, o: Outcome) -> None:
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    assert not o.timed_out, f"{case.id}: still running after {o.seconds:.0f}s (killed): {o.stderr[-500:]}"
    assert not o.leftovers, f"{case.id}: left running: {o.leftovers}"
    assert not o.run_dirs, f"{case.id}: started a run: {o.run_dirs}"
    assert not o.temp_files, f"{case.id}: stray temp files: {o.temp_files}"
    assert "internal error" not in o.stderr, o.stderr
    assert "Traceback" not in o.stderr, o.stderr
    assert len(lines) == 1, f"{case.id}: expected one line on stderr, got {len(lines)}:\n{o.stderr[-2000:]}"
    assert o.rc == 2, f"{case.id}: exit {o.rc}: {lines[0]}"
    assert case.expect.lower() in lines[0].lower(), f"{case.id}: {case.expect!r} not in {lines[0]!r}"


def _param(case: Case):
    marks = [pytest.mark.xfail(reason=case.pending, strict=False)] if case.pending else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CLI_CASES])
def test_bad_input_is_one_line_exit_2(case: Case, outcomes: dict[str, Outcome]):
    _judge(case, outcomes[case.id])


@pytest.mark.parametrize("path", topology_files(), ids=lambda p: p.stem)
def test_bad_topology_is_one_config_error_line(path: Path):
    expect, _ = _expect_line(path.read_bytes())
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        topology.load(path)
    assert time.monotonic() - t0 < 5.0, "validation must be quick, whatever the input"
    msg = str(ei.value)
    assert error_line(msg) == msg, f"not one printable line: {msg!r}"
    assert msg.startswith(str(path)), msg
    assert expect.lower() in msg.lower(), f"{expect!r} not in {msg!r}"


def test_nothing_left_running(corpus_root: Path, outcomes: dict[str, Outcome]):
    """After the whole corpus: no process anywhere mentions the corpus directory."""
    assert processes_mentioning(corpus_root) == []


# -- the pieces behind the corpus ----------------------------------------------------------------------------

def test_alias_bomb_is_refused_without_expanding_it(tmp_path):
    from meshbed.safeio import load_yaml
    levels = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 30))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + levels)  # 9**30 nodes expanded
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="alias bomb"):
        load_yaml(bomb, "topology file")
    assert time.monotonic() - t0 < 1.0
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {replicas: 2}\na: *b\nb: {<<: *b, calls: [a]}\n")
    assert load_yaml(ok, "x") == {"base": {"replicas": 2}, "a": {"replicas": 2}, "b": {"replicas": 2, "calls": ["a"]}}


def test_instance_cap_names_the_machine_limit():
    limit, why = topology.instance_limit()
    assert 8 <= limit <= 256 and "CPUs" in why and "RAM" in why
    doc = {"services": {"a": {"replicas": 3}, "b": {"replicas": 3}}}
    assert len(topology.parse(doc, "t.yaml", max_instances=6).instances()) == 6
    with pytest.raises(ConfigError, match=r"services: 2 services with 6 instances in all .* over 5"):
        topology.parse(doc, "t.yaml", max_instances=5)


def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_content(tmp_path):
    from meshbed.safeio import atomic_write
    out = tmp_path / "page.html"
    atomic_write(out, "old")
    with pytest.raises(ConfigError, match="is a directory"):
        atomic_write(tmp_path, "x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        atomic_write(out / "below.html", "x")
    assert out.read_text() == "old"
    assert atomic_write(out, "new", mode=0o600).read_text() == "new"
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_run_directories_are_private(tmp_path):
    from meshbed.runtime.state import RunState, list_runs
    runs = tmp_path / "a" / "runs"
    st = RunState.create(runs, "process", "t.yaml")
    for d in (tmp_path / "a", runs, st.run_dir):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert (st.run_dir / "run.json").stat().st_mode & 0o777 == 0o600
    st.set_status("down")
    assert (st.run_dir / "run.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in st.run_dir.iterdir()] == ["run.json"]
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text('{"run_id": "broken", "processes": {"x": {"pid": "1"}}}')
    problems: list[str] = []
    assert [r.run_id for r in list_runs(runs, problems)] == [st.run_id]
    assert len(problems) == 1 and "processes.x.pid" in problems[0]


def test_settings_refuse_non_finite_numbers():
    from meshbed.settings import Settings
    for value in ("nan", "inf", "-inf", "1e999", float("nan")):
        with pytest.raises(ConfigError, match="ready_timeout .*finite"):
            Settings.build(cli={"ready_timeout": value}, env={})
    with pytest.raises(ConfigError, match="MESHBED_READY_TIMEOUT"):
        Settings.build(env={"MESHBED_READY_TIMEOUT": "NaN"})
    with pytest.raises(ConfigError, match="ini meshbed_ready_timeout"):
        Settings.build(ini={"ready_timeout": "inf"}, env={})
    with pytest.raises(ConfigError, match="finite"):
        Settings(ready_timeout=float("nan"))
