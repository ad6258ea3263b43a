"""A user's own checks (catalog files), packaged resources by name, the plugin's fixtures and JUnit output.

No mesh: stand-in checks use only the `check` fixture (profile + verdict), as in test_run.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from meshbed import packaged
from meshbed.checks import catalog, params
from meshbed.checks import profile as profile_mod
from meshbed.checks.catalog import CATALOG, CatalogEntry
from meshbed.errors import ConfigError
from meshbed.run import RunOptions, plan, run, suites_dirs

ROOT = Path(__file__).resolve().parents[1]

YAML_CATALOG = """
checks:
  MY-1:
    title: every backend instance answers
    group: lb
    figures: {reached: "%"}
    params: {requests: 60, path: /, services: [backend]}
"""

PY_CATALOG = '''
from __future__ import annotations

from dataclasses import dataclass

from meshbed.testing import CatalogEntry, register


@dataclass(frozen=True)
class P:
    repeats: int = 3
    deadline_s: float = 2.0


register(CatalogEntry("MY-2", "discovery", "deregistration converges", {"convergence_max": "s"}), P)
'''

PROFILE = """
extends: default
checks:
  MY-1:
    thresholds: {reached: ">= 100 %"}
    params: {requests: 90}
"""

USER_TEST = """
import pytest

@pytest.mark.lb
@pytest.mark.check("MY-1")
def test_my1(check):
    assert check.p.requests == 90 and check.p.services == ("backend",)
    check.figure("reached", 100.0, "%", check.p.requests, "stand-in")
    check.judge()
"""

BUILTIN_STANDIN = """
import pytest

@pytest.mark.quick
@pytest.mark.check("DISC-1")
def test_disc1(check):
    check.figure("convergence_p99", 0.05, "s", 10, "stand-in", min_n=5)
    check.judge()
"""


@pytest.fixture(autouse=True)
def clean_catalog(monkeypatch):
    """Registrations are process-wide: every test starts from, and leaves, the built-in catalog."""
    saved = dict(CATALOG), dict(params.PARAMS), set(catalog._loaded)
    for var in ("MESHBED_TOPOLOGY", "MESHBED_PROFILE", "MESHBED_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    yield
    CATALOG.clear()
    CATALOG.update(saved[0])
    params.PARAMS.clear()
    params.PARAMS.update(saved[1])
    catalog._loaded.clear()
    catalog._loaded.update(saved[2])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# -- catalog files ---------------------------------------------------------------------------------------

def test_yaml_catalog_registers_the_entry_and_typed_params(tmp_path):
    catalog.load_file(_write(tmp_path / "meshbed_catalog.yaml", YAML_CATALOG))
    e = CATALOG["MY-1"]
    assert (e.group, e.title, e.figures) == ("lb", "every backend instance answers", {"reached": "%"})
    p = params.build("MY-1", {})
    assert (p.requests, p.path, p.services) == (60, "/", ("backend",))
    assert params.build("MY-1", {"requests": 90}).requests == 90
    with pytest.raises(ConfigError, match="params.requests: must be an integer"):
        params.build("MY-1", {"requests": "many"})
    prof = profile_mod.load(_write(tmp_path / "p.yaml", PROFILE))
    assert [str(t) for t in prof.for_check("MY-1").thresholds] == [">= 100 %"]
    assert "DISC-1" in prof.checks  # extends: default keeps the built-in thresholds
    with pytest.raises(ConfigError, match="MY-1 measures no such figure"):
        profile_mod.load(_write(tmp_path / "q.yaml", "extends: default\nchecks:\n  MY-1:\n"
                                                     "    thresholds: {hits: '>= 1'}\n"))


def test_python_catalog_registers_with_its_params_dataclass(tmp_path):
    catalog.load_file(_write(tmp_path / "meshbed_catalog.py", PY_CATALOG))
    assert CATALOG["MY-2"].figures == {"convergence_max": "s"}
    assert params.build("MY-2", {"deadline_s": 1}).deadline_s == 1.0  # string annotations resolve
    catalog.load_file(tmp_path / "meshbed_catalog.py")  # the same file again: nothing happens


@pytest.mark.parametrize("text, message", [
    ("checks:\n  my-1: {title: t, group: lb}\n", "an id is letters, a dash and a number"),
    ("checks:\n  MY-1: {title: t, group: mine}\n", "group 'mine' is not one of discovery, lb, tracing, resilience"),
    ("checks:\n  MY-1: {group: lb}\n", "needs a title"),
    ("checks:\n  MY-1: {title: t, group: lb, thresholds: {}}\n", "checks.MY-1.thresholds: unknown field"),
    ("checks:\n  MY-1: {title: t, group: lb, figures: [a]}\n", "figures: must map figure -> unit"),
    ("checks:\n  MY-1: {title: t, group: lb, params: {x: {a: 1}}}\n", "params.x: a default must be"),
    ("checks:\n  DISC-1: {title: mine, group: discovery}\n", "DISC-1: already in the catalog"),
    ("- MY-1\n", "a catalog file is a 'checks:' mapping"),
    ("checks: {MY-1: {title: t, group: lb}}\nextra: 1\n", "a catalog file is a 'checks:' mapping"),
    ("checks: [\n", "invalid YAML"),
])
def test_bad_yaml_catalog_is_one_line_naming_the_file(tmp_path, text, message):
    f = tmp_path / "meshbed_catalog.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="meshbed_catalog.yaml") as ei:
        catalog.load_file(f)
    assert message in str(ei.value) and "\n" not in str(ei.value)


def test_bad_python_catalog_and_bad_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"boom.py: the catalog file raised ZeroDivisionError"):
        catalog.load_file(_write(tmp_path / "boom.py", "1 / 0\n"))
    with pytest.raises(ConfigError, match="catalog file not found"):
        catalog.load_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"is \.yaml, \.yml or \.py"):
        catalog.load_file(_write(tmp_path / "c.txt", "x"))
    with pytest.raises(ConfigError, match="expected a CatalogEntry"):
        catalog.register({"id": "MY-1"})  # type: ignore[arg-type]


def test_discover_walks_up_to_the_rootdir(tmp_path):
    a = _write(tmp_path / "a" / "meshbed_catalog.yaml", YAML_CATALOG)
    b = _write(tmp_path / "a" / "b" / "meshbed_catalog.py", PY_CATALOG)
    test = _write(tmp_path / "a" / "b" / "test_x.py", "")
    assert catalog.discover([test], stop_at=tmp_path) == [b, a]
    assert catalog.discover([test.parent], stop_at=test.parent) == [b]
    assert catalog.discover([test.parent, test], stop_at=None) == [b]  # each once; no rootdir: only its own


# -- meshbed run: the catalog before the profile, several suites ---------------------------------------------

def _user_dir(tmp_path: Path) -> Path:
    mine = tmp_path / "mytests"
    _write(mine / "meshbed_catalog.yaml", YAML_CATALOG)
    _write(mine / "test_mine.py", USER_TEST)
    _write(tmp_path / "my-profile.yaml", PROFILE)
    return mine


def test_plan_loads_the_user_catalog_before_the_profile(tmp_path):
    mine = _user_dir(tmp_path)
    p = plan(RunOptions(suites=[str(mine), "builtin"], profile=str(tmp_path / "my-profile.yaml"),
                        out_dir=str(tmp_path / "r"), state_dir=str(tmp_path / "s")))
    assert p.suites_dirs == [mine, ROOT / "suites"] and p.argv[3:5] == [str(mine), str(ROOT / "suites")]
    assert p.argv[p.argv.index("--meshbed-catalog") + 1] == str(mine / "meshbed_catalog.yaml")
    assert p.cwd == tmp_path  # beside the user's tests: their conftest and ini apply
    assert p.catalogs == [mine / "meshbed_catalog.yaml"]


def test_plan_refuses_an_undeclared_check_with_a_hint(tmp_path):
    mine = tmp_path / "mytests"
    _write(mine / "test_mine.py", USER_TEST)
    prof = _write(tmp_path / "my-profile.yaml", PROFILE)
    with pytest.raises(ConfigError, match="not a catalog check id") as ei:
        plan(RunOptions(suites=[str(mine)], profile=str(prof), out_dir=str(tmp_path / "r")))
    assert "meshbed_catalog.yaml" in ei.value.hint
    # an explicit --catalog anywhere works as well as one beside the tests
    cat = _write(tmp_path / "elsewhere" / "checks.yaml", YAML_CATALOG)
    p = plan(RunOptions(suites=[str(mine)], profile=str(prof), catalogs=[str(cat)], out_dir=str(tmp_path / "r")))
    assert p.catalogs == [cat]


def test_suites_values(tmp_path):
    assert suites_dirs(None) == suites_dirs("builtin") == suites_dirs(["builtin", "builtin"]) == [ROOT / "suites"]
    with pytest.raises(ConfigError, match="--suites: empty value"):
        suites_dirs(["builtin", " "])
    with pytest.raises(ConfigError, match="suites directory not found"):
        suites_dirs([str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="--catalog: empty value"):
        plan(RunOptions(catalogs=[""], out_dir=str(tmp_path / "r")))


def test_run_reports_the_user_check_beside_the_builtin_ones(tmp_path, capsys):
    mine = _user_dir(tmp_path)
    standin = _write(tmp_path / "standin" / "test_standin.py", BUILTIN_STANDIN).parent
    out = tmp_path / "out"
    rc = run(RunOptions(suites=[str(mine), str(standin)], profile=str(tmp_path / "my-profile.yaml"),
                        out_dir=str(out), state_dir=str(tmp_path / "s")))
    assert rc == 0, capsys.readouterr()
    doc = json.loads((out / "conformance.json").read_text())
    assert {c["id"]: c["verdict"] for c in doc["checks"]} == {"DISC-1": "pass", "MY-1": "pass"}
    assert doc["run"]["catalogs"] == [str(mine / "meshbed_catalog.yaml")]
    assert "every backend instance answers" in (out / "conformance.html").read_text()
    # JUnit: testcases named by check id and title, the figures as properties
    cases = {c.get("name"): c for c in ET.parse(out / "junit.xml").iter("testcase")}
    assert set(cases) == {"MY-1: every backend instance answers", "DISC-1: register a new healthy instance"}
    props = {p.get("name"): p.get("value") for p in cases["MY-1: every backend instance answers"].iter("property")}
    assert props["meshbed.verdict"] == "pass" and props["meshbed.check"] == "MY-1"
    assert props["figure.reached"] == "100 % (n=90), threshold >= 100 %"


# -- plain pytest: the plugin's catalogs, fixtures and JUnit names --------------------------------------------

def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_plain_pytest_conftest_check_fault_log_and_junit(tmp_path):
    """Under plain pytest a conftest may register a check; fault_log works without a check; names in JUnit."""
    _write(tmp_path / "conftest.py", """
        from meshbed.testing import CatalogEntry, register
        register(CatalogEntry("MY-3", "resilience", "my own resilience check", {"errors": "requests"}))
    """)
    _write(tmp_path / "p.yaml", "extends: default\nchecks:\n  MY-3: {thresholds: {errors: '<= 0 requests'}}\n")
    _write(tmp_path / "test_x.py", """
        import pytest
        from meshbed.testing import FaultLog

        def test_fault_log_without_a_check(fault_log):
            assert isinstance(fault_log, FaultLog)
            with fault_log.window("latency", "upstream-backend-0"):
                pass
            assert [w.name for w in fault_log.windows] == ["latency"]

        @pytest.mark.check("MY-3")
        def test_my3(check, fault_log):
            with fault_log.window("pause", "consul"):
                check.figure("errors", 0, "requests", 50, "stand-in")
            check.judge()
    """)
    r = _pytest(tmp_path, "--meshbed-profile", "p.yaml", "--junitxml", "j.xml", "--meshbed-results", "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    names = [c.get("name") for c in ET.parse(tmp_path / "j.xml").iter("testcase")]
    assert names == ["test_fault_log_without_a_check", "MY-3: my own resilience check"]
    doc = json.loads((tmp_path / "r.json").read_text())
    (c,) = doc["checks"]
    assert c["verdict"] == "pass" and c["evidence"]["fault_windows"]["data"][0]["name"] == "pause"


def test_plain_pytest_finds_the_catalog_file_and_ini_key(tmp_path):
    mine = _user_dir(tmp_path)
    r = _pytest(tmp_path, "mytests", "--meshbed-profile", "my-profile.yaml")  # found beside the tests
    assert r.returncode == 0, r.stdout + r.stderr
    # elsewhere: the ini key (relative to the ini file), the option or MESHBED_CATALOG
    (mine / "meshbed_catalog.yaml").rename(tmp_path / "checks.yaml")
    r = _pytest(tmp_path, "mytests", "--meshbed-profile", "my-profile.yaml")
    assert r.returncode != 0 and "not a catalog check id" in r.stdout + r.stderr
    r = _pytest(tmp_path, "mytests", "--meshbed-profile", "my-profile.yaml", "--meshbed-catalog", "checks.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    _write(tmp_path / "pytest.ini", "[pytest]\nmeshbed_catalog = checks.yaml\n")
    r = _pytest(tmp_path, "mytests", "--meshbed-profile", "my-profile.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "checks.yaml").write_text("checks: [\n")
    r = _pytest(tmp_path, "mytests", "--meshbed-profile", "my-profile.yaml")
    assert r.returncode == 4 and "checks.yaml: invalid YAML" in r.stderr


# -- packaged resources by name ------------------------------------------------------------------------------

def test_topology_and_profile_by_name(tmp_path, monkeypatch):
    assert packaged.topology() == packaged.topology("basic") == ROOT / "examples" / "basic.yaml"
    assert packaged.topology("mine.yaml") == Path("mine.yaml")  # a path is left to the loader
    with pytest.raises(ConfigError, match="-f nope: no such file, nor an example topology.*examples: basic"):
        packaged.topology("nope")
    assert packaged.profile() == packaged.profile("default") == profile_mod.default_path()
    with pytest.raises(ConfigError, match="--profile strict: no such file, nor a packaged profile"):
        packaged.profile("strict")
    # from any directory, the defaults are the packaged files (the settings default names a checkout path)
    from meshbed.settings import Settings
    monkeypatch.chdir(tmp_path)
    s = packaged.with_defaults(Settings.build(cli={}), cli={})
    assert s.topology == ROOT / "examples" / "basic.yaml" and s.profile == profile_mod.default_path()
    (tmp_path / "basic").write_text("a file of that name wins\n")
    s = packaged.with_defaults(Settings.build(cli={"topology": "basic"}), cli={"topology": "basic"})
    assert s.topology == Path("basic")
    monkeypatch.setenv("MESHBED_PROFILE", "default")
    s = packaged.with_defaults(Settings.build(cli={}), cli={})
    assert s.profile == profile_mod.default_path()


def test_the_testing_module_reexports_not_copies():
    from meshbed import testing, traffic, wait
    from meshbed.chaos import faults
    from meshbed.observe import convergence
    import meshbed.policy_control as pc
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    assert testing.drive is traffic.drive and testing.until is wait.until and testing.latency is faults.latency
    assert testing.converge_times is convergence.converge_times and testing.applied is pc.applied
