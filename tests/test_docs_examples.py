"""docs/writing-tests.md cannot rot: its `# file:` blocks are written out and run against a real mesh.

The offline test checks that the examples are there, compile, name only what
``meshbed.testing`` exports, and that the page's `meshbed` command lines parse.
The integration test runs every example file with plain pytest (the plugin
brings one mesh up) in a directory outside the checkout.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-tests.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
EXAMPLES = {"test_every_backend_is_reached", "test_deregistration_converges_within_2s",
            "test_200ms_latency_shows_in_response_times", "test_my1_every_backend_answers"}


def blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in FENCE.findall(DOC.read_text())]


def files() -> dict[str, str]:
    """name -> content of every block whose first line is ``# file: NAME``."""
    out = {}
    for _, body in blocks():
        first = body.splitlines()[0] if body else ""
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = body
    return out


def test_the_documented_examples_are_whole():
    fs = files()
    assert {"meshbed_catalog.yaml", "my-profile.yaml"} <= set(fs)
    tests = set()
    import meshbed.testing as mt
    for name, body in fs.items():
        if name.endswith(".py"):
            tree = ast.parse(body, name)
            tests |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "meshbed.testing":
                    missing = [a.name for a in node.names if not hasattr(mt, a.name)]
                    assert not missing, f"{name}: meshbed.testing has no {missing}"
        else:
            assert isinstance(yaml.safe_load(body), dict), name
    assert tests == EXAMPLES


def test_the_documented_commands_parse():
    from meshbed import cli
    lines = [ln.split("#")[0].strip() for lang, body in blocks() if lang == "sh" for ln in body.splitlines()]
    commands = [shlex.split(ln)[1:] for ln in lines if ln.startswith("meshbed ")]
    assert any(c[:1] == ["run"] for c in commands)
    for argv in commands:
        cli.build_parser().parse_args(argv)  # an unknown flag exits 2


def test_the_documented_catalog_and_profile_load(tmp_path, monkeypatch):
    from meshbed.checks import catalog, params
    from meshbed.checks import profile as profile_mod
    saved = dict(catalog.CATALOG), dict(params.PARAMS)
    fs = files()
    try:
        for name in ("meshbed_catalog.yaml", "my-profile.yaml"):
            (tmp_path / name).write_text(fs[name])
        catalog._load_yaml(tmp_path / "meshbed_catalog.yaml")
        prof = profile_mod.load(tmp_path / "my-profile.yaml")
        assert prof.for_check("MY-1").params.requests == 60
    finally:
        catalog.CATALOG.clear()
        catalog.CATALOG.update(saved[0])
        params.PARAMS.clear()
        params.PARAMS.update(saved[1])


@pytest.mark.integration
def test_the_documented_examples_pass_on_a_real_mesh(tmp_path):
    """Every example file, as written, with plain pytest from a directory of its own (one mesh)."""
    work = tmp_path / "mine"
    work.mkdir()
    for name, body in files().items():
        (work / name).write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_")}
    results = tmp_path / "conformance.json"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", "-v",
                        "--meshbed-profile", "my-profile.yaml", "--meshbed-state-dir", str(tmp_path / "state"),
                        "--meshbed-results", str(results)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = set(re.findall(r"::(test_\w+) PASSED", r.stdout))
    assert passed == EXAMPLES, r.stdout[-4000:]
    doc = json.loads(results.read_text())
    assert [(c["id"], c["verdict"]) for c in doc["checks"]] == [("MY-1", "pass")]
    assert doc["environment"]["leftovers_at_end"]["toxics"] == []
