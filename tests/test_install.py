"""meshbed as a user gets it: the wheel, installed into a fresh virtualenv, used from another directory.

Builds the wheel of this checkout, installs it (``[load]``) into a new venv
outside the checkout, and from a directory of the user's own:
- ``meshbed up --detach`` with no ``-f`` (the example topology by name), then ``down --run``;
- a user's test file with the plugin's fixtures (mesh, consul, toxi, load, fault_log) under plain pytest;
- a user check from the user's catalog file, in the report of
  ``meshbed run --suites mytests --suites builtin`` beside a built-in check, and in the JUnit XML;
- ``meshbed run -m quick`` (the built-in quick tier).
The Go-built binaries come from ~/.cache/meshbed/bin, as for any user. Every run uses a
state directory of its own; whatever is still up at the end is torn down by its run id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

CATALOG = '''
"""My own checks, beside meshbed's catalog (found by `meshbed run` and by the plugin)."""
from dataclasses import dataclass

from meshbed.testing import CatalogEntry, register


@dataclass(frozen=True)
class ReachParams:
    requests: int = 60


register(CatalogEntry("MY-1", "lb", "every backend instance answers", {"reached": "%"}), ReachParams)
'''

PROFILE = """
extends: default
checks:
  MY-1:
    thresholds: {reached: ">= 100 %"}
    params: {requests: 90}
"""

USER_TESTS = '''
import pytest

from meshbed import testing as mt


def test_plain_fixtures(mesh, consul, toxi, fault_log):
    backends = mesh.instances_of("backend")
    assert sorted(i.id for i in consul.instances("backend")) == sorted(backends)
    with mt.latency(toxi, mesh.links["upstream"][backends[0]], 50, log=fault_log):
        assert mt.drive(mesh.ingress_url, 6).ok == 6
    assert [w.name for w in fault_log.windows] == ["latency"]


def test_load(mesh, load):
    with load(rps=20, duration_s=4) as run:
        run.wait_started()
    assert run.result().n > 0


@pytest.mark.lb
@pytest.mark.check("MY-1")
def test_my1_every_backend_reached(mesh, check):
    batch = mt.drive(mesh.ingress_url, check.p.requests)
    reached = {a.json()["downstream"][0]["instance"] for a in batch.answers if a.status == 200}
    want = set(mesh.instances_of("backend"))
    check.figure("reached", 100.0 * len(reached & want) / len(want), "%", batch.n, "sample service answers")
    check.judge()
'''


class User:
    """A fresh venv with the wheel installed, and a working directory of the user's own."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / ".venv"
        self.home = base / "repo"  # the user's repository
        self.state = base / "state"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("MESHBED_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.timings: dict[str, float] = {}

    def sh(self, *argv: str | Path, timeout: float = 900, check: bool = True, what: str = "",
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        r = subprocess.run([str(a) for a in argv], cwd=cwd or self.home, env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        self.timings[what or " ".join(map(str, argv[:2]))] = round(time.monotonic() - t0, 1)
        if check:
            assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-5000:]}\n{r.stderr[-3000:]}"
        return r

    def meshbed(self, *argv: str | Path, **kw) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
        return self.sh(self.venv / "bin" / "meshbed", *argv, **kw)

    def active_runs(self) -> list[str]:
        r = self.meshbed("status", "--json", "--state-dir", self.state, check=False, what="status")
        try:
            doc = json.loads(r.stdout or "[]")
        except ValueError:
            return []
        return [x["run_id"] for x in (doc if isinstance(doc, list) else [doc])]


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("meshbed-user")
    assert not base.is_relative_to(ROOT)
    u = User(base)
    wheels = base / "wheel"
    u.sh(sys.executable, "-m", "pip", "wheel", ROOT, "-w", wheels, "--no-deps", "-q", what="build wheel", cwd=base)
    (wheel,) = wheels.glob("meshbed-*.whl")
    u.wheel = wheel  # type: ignore[attr-defined]
    u.sh(sys.executable, "-m", "venv", u.venv, what="venv", cwd=base)
    u.sh(u.venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[load]", what="pip install", cwd=base)
    u.home.mkdir()
    yield u
    for run_id in u.active_runs():  # only the runs of this state directory: ours
        u.meshbed("down", "--run", run_id, "--state-dir", u.state, check=False, what=f"down {run_id}")
    print(f"\ninstall test: wheel {wheel.stat().st_size / 1024:.0f} KiB; timings (s): {u.timings}")


def test_the_wheel_carries_what_the_commands_need(user):
    names = set(zipfile.ZipFile(user.wheel).namelist())
    for needed in ("meshbed/examples/basic.yaml", "meshbed/examples/chain.yaml", "meshbed/topology.schema.json",
                   "meshbed/roles.py", "meshbed/profiles/default.yaml",
                   "meshbed/_templates/loadtests/locustfile.py", "meshbed/_templates/envoy/bootstrap.yaml.j2",
                   "meshbed/suites/__init__.py", "meshbed/suites/test_discovery.py", "meshbed/suites/test_lb.py",
                   "meshbed/fixtures.py", "meshbed/testing.py", "meshbed/report/schema.json"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    r = user.sh(user.venv / "bin" / "python", "-c", "import meshbed; print(meshbed.__file__)", what="import")
    assert Path(r.stdout.strip()).is_relative_to(user.venv)  # the installed copy, not the checkout
    assert "_supervise" not in user.meshbed("--help", what="help").stdout


def test_up_with_no_topology_file_uses_the_packaged_example(user):
    r = user.meshbed("up", "--detach", "--json", "--state-dir", user.state, timeout=600, what="up --detach")
    ep = json.loads(r.stdout)
    try:
        assert ep["topology"] == "basic" and ep["ingress_url"].startswith("http://127.0.0.1:")
        probe = user.sh(user.venv / "bin" / "python", "-c",
                        f"from meshbed import httpc; print(httpc.get({ep['ingress_url']!r} + '/').status)",
                        what="ingress")
        assert probe.stdout.strip() == "200"
    finally:
        user.meshbed("down", "--run", ep["run_id"], "--state-dir", user.state, what="down --run")
    assert ep["run_id"] not in user.active_runs()


def test_a_user_test_file_with_the_plugin_fixtures(user):
    mine = user.home / "mytests"
    mine.mkdir()
    (mine / "meshbed_catalog.py").write_text(textwrap.dedent(CATALOG).lstrip())
    (mine / "test_mine.py").write_text(textwrap.dedent(USER_TESTS).lstrip())
    (user.home / "my-profile.yaml").write_text(textwrap.dedent(PROFILE).lstrip())
    r = user.sh(user.venv / "bin" / "pytest", "mytests", "-p", "no:cacheprovider", "--meshbed-profile",
                "my-profile.yaml", "--meshbed-state-dir", user.state, "--meshbed-results", user.base / "plain.json",
                timeout=600, what="plain pytest")
    assert "3 passed" in r.stdout, r.stdout[-3000:]
    doc = json.loads((user.base / "plain.json").read_text())
    assert [(c["id"], c["verdict"]) for c in doc["checks"]] == [("MY-1", "pass")]


def test_a_user_check_in_the_report_beside_the_builtin_catalog(user):
    out = user.base / "report-mine"
    user.meshbed("run", "--suites", "mytests", "--suites", "builtin", "--profile", "my-profile.yaml",
                 "-k", "my1 or disc1", "--out", out, "--state-dir", user.state, timeout=900, what="run mine+builtin")
    doc = json.loads((out / "conformance.json").read_text())
    checks = {c["id"]: c for c in doc["checks"]}
    assert {i: c["verdict"] for i, c in checks.items()} == {"DISC-1": "pass", "MY-1": "pass"}
    assert checks["MY-1"]["title"] == "every backend instance answers" and checks["MY-1"]["group"] == "lb"
    assert "every backend instance answers" in (out / "conformance.html").read_text()
    cases = [c.get("name") for c in ET.parse(out / "junit.xml").iter("testcase")]
    assert sorted(cases) == ["DISC-1: register a new healthy instance", "MY-1: every backend instance answers"]


def test_the_quick_tier_from_the_users_directory(user):
    out = user.base / "report-quick"
    r = user.meshbed("run", "-m", "quick", "--out", out, "--state-dir", user.state, timeout=1800, what="run -m quick")
    assert "meshbed run: PASS" in r.stdout
    doc = json.loads((out / "conformance.json").read_text())
    assert doc["summary"]["verdict"] == "pass" and doc["summary"]["pass"] >= 5
    assert Path(doc["run"]["suites_dir"]).is_relative_to(user.venv)  # the packaged suites
    assert user.active_runs() == []
