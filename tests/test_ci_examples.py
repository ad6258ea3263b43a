"""examples/ci/: the GitHub Actions workflow and the GitLab CI job are valid YAML with the steps users need.

Each must install meshbed, cache ~/.cache/meshbed (the Go builds), run `meshbed run` (with flags the CLI
accepts), keep the HTML report as an artifact and publish the JUnit XML as test results, even when the run
failed.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from meshbed import cli

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CI / name).read_text())
    assert isinstance(doc, dict), name
    return doc


def _meshbed_commands(lines: list[str]) -> list[list[str]]:
    out = []
    for text in lines:
        for ln in str(text).splitlines():
            ln = ln.split(" #")[0].strip()
            if ln.startswith("meshbed "):
                out.append(shlex.split(ln)[1:])
    return out


def _assert_run_line(commands: list[list[str]]) -> None:
    runs = [c for c in commands if c[:1] == ["run"]]
    assert len(runs) == 1, commands
    (argv,) = runs
    args = cli.build_parser().parse_args(argv)  # an unknown flag exits 2
    assert args.out == "reports" and "builtin" in argv and "--suites" in argv
    assert ["provision"] in commands  # builds what the cache lacks


def test_github_actions_workflow():
    wf = _load("github-actions.yml")
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert {"push", "pull_request"} <= set(on)
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu") and job["permissions"]["checks"] == "write"
    steps = job["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert {"actions/checkout", "actions/setup-python", "actions/setup-go", "actions/cache",
            "actions/upload-artifact", "mikepenz/action-junit-report"} <= set(uses)
    assert uses["actions/cache"]["with"]["path"] == "~/.cache/meshbed"
    runs = [s["run"] for s in steps if "run" in s]
    assert any("pip install" in r and "MESHBED_SPEC" in r for r in runs)
    assert "[load]" in wf["env"]["MESHBED_SPEC"]
    _assert_run_line(_meshbed_commands(runs))
    # the report and the results are kept even when the run failed
    upload, junit = uses["actions/upload-artifact"], uses["mikepenz/action-junit-report"]
    for step in (upload, junit):
        assert "!cancelled()" in step["if"] or "always()" in step["if"]
    assert "reports/conformance.html" in upload["with"]["path"]
    assert junit["with"]["report_paths"] == "reports/junit.xml"
    # steps run in order: cache before install/provision, run before publishing
    names = [s.get("uses", "").split("@")[0] or s.get("name") for s in steps]
    assert names.index("actions/cache") < names.index("Provision (builds only what the cache lacks)") \
        < names.index("Conformance run") < names.index("actions/upload-artifact")


def test_gitlab_ci_job():
    doc = _load("gitlab-ci.yml")
    (job,) = doc.values()
    assert "golang" in job["image"]  # Go for the builds on a cache miss
    assert job["variables"]["XDG_CACHE_HOME"] == "$CI_PROJECT_DIR/.cache"  # so the cache path is in the project
    assert ".cache/meshbed/" in job["cache"]["paths"]
    lines = job["before_script"] + job["script"]
    assert any("pip install" in ln and "MESHBED_SPEC" in ln for ln in lines)
    assert "[load]" in job["variables"]["MESHBED_SPEC"]
    _assert_run_line(_meshbed_commands(lines))
    art = job["artifacts"]
    assert art["when"] == "always" and "reports/conformance.html" in art["paths"]
    assert art["reports"]["junit"] == "reports/junit.xml"


def test_the_templates_are_documented():
    text = (CI / "README.md").read_text()
    assert "github-actions.yml" in text and "gitlab-ci.yml" in text
