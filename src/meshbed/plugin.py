"""meshbed's pytest plugin: options, markers and the mesh fixtures, in one module.

Fixtures are layered like pytest-httpserver's: settings (session) -> a
session-scoped mesh factory that starts each topology once -> a per-test
``mesh`` handle that is reset to the baseline before every test.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import pytest

MARKERS = {
    "integration": "brings up a real mesh (slow)",
    "quick": "the quick tier of the conformance suites",
    "discovery": "DISC checks: discovery convergence",
    "lb": "LB checks: load-balancer spread",
    "tracing": "TRACE checks: trace completeness",
    "resilience": "RES checks: resilience under faults",
    "check(id)": "the conformance catalog id a test implements, e.g. check('DISC-1')",
}

OPTIONS = {
    # name: (help, default)
    "runtime": ("runtime to bring meshes up on: process (default) or docker", None),
    "topology": ("topology YAML for the `mesh` fixture (default examples/basic.yaml)", None),
    "profile": ("conformance profile YAML with thresholds (default examples/profiles/default.yaml)", None),
    "state_dir": ("where run directories live (default ~/.cache/meshbed/runs)", None),
    "ready_timeout": ("seconds to wait for each start-up phase (default 90)", None),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshbed", "meshbed: service-mesh testbed")
    for name, (help_, default) in OPTIONS.items():
        flag = "--meshbed-" + name.replace("_", "-")
        group.addoption(flag, dest=f"meshbed_{name}", default=default, help=help_)
        parser.addini(f"meshbed_{name}", help_, default=None)


def pytest_configure(config: pytest.Config) -> None:
    for name, desc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {desc}")


def _settings_from(config: pytest.Config):  # -> Settings (import kept lazy: no work at plugin import)
    from .settings import Settings
    cli = {n: config.getoption(f"meshbed_{n}") for n in OPTIONS}
    ini = {n: config.getini(f"meshbed_{n}") for n in OPTIONS}
    return Settings.build(cli=cli, ini=ini)


@pytest.fixture(scope="session")
def meshbed_settings(pytestconfig: pytest.Config):
    """The one Settings object of the session (CLI > env > ini > defaults)."""
    return _settings_from(pytestconfig)


@pytest.fixture(scope="session")
def mesh_factory(meshbed_settings) -> Iterator[Callable[..., object]]:
    """Start a topology (path or Topology) once per session; all are torn down at the end."""
    from .console import Progress
    from .mesh import bring_up
    from .topology import Topology, load

    meshes: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        def factory(topology: "str | Path | Topology | None" = None):
            topo = topology if isinstance(topology, Topology) else load(topology or meshbed_settings.topology)
            key = f"{topo.source}:{topo.name}"
            if key not in meshes:
                meshes[key] = stack.enter_context(bring_up(topo, meshbed_settings, Progress()))
            return meshes[key]

        yield factory


@pytest.fixture(scope="session")
def mesh_session(mesh_factory):
    """The session's mesh for the configured topology."""
    return mesh_factory()


@pytest.fixture
def mesh(mesh_session):
    """The session mesh, reset to its baseline before the test (no toxics, nothing paused)."""
    from .baseline import reset
    reset(mesh_session)
    yield mesh_session
    reset(mesh_session)
