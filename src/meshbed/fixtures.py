"""The fixtures a test of the mesh is written with, beside ``mesh`` and ``check`` (all in meshbed's pytest plugin).

- ``consul``: a :class:`~meshbed.observe.consul.ConsulClient` for the mesh's Consul;
- ``toxi``: a :class:`~meshbed.chaos.toxiproxy.ToxiproxyClient` for the links the topology puts under chaos
  (``mesh.links["upstream"][instance]`` names the proxy in front of an instance);
- ``load``: a Locust run against the ingress (``with load(rps=40, duration_s=20) as run: ...``), needs
  ``pip install 'meshbed[load]'``;
- ``fault_log``: every fault window of the test (pass ``log=fault_log`` to a fault); in a check
  (``@pytest.mark.check``) the windows go into the report, shaded on its load charts.

Imports are deferred to the fixtures themselves: loading the plugin stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from .chaos.faults import FaultLog
    from .chaos.toxiproxy import ToxiproxyClient
    from .load import LoadRun
    from .observe.consul import ConsulClient


@pytest.fixture
def fault_log(request: pytest.FixtureRequest) -> Iterator["FaultLog"]:
    """Every fault window of the test; attached to the check's evidence when the test is a check."""
    from .chaos.faults import FaultLog
    check = None
    if "check" in request.fixturenames and request.node.get_closest_marker("check") is not None:
        check = request.getfixturevalue("check")  # set up first, so it is judged and recorded after this
    log = FaultLog()
    yield log
    if check is not None:
        check.chart("fault_windows", "fault_windows", log.to_json())


@pytest.fixture
def toxi(mesh) -> "ToxiproxyClient":  # noqa: ANN001
    """The mesh's Toxiproxy (faults on the links in the topology's ``chaos.links``)."""
    return mesh.toxiproxy_client()


@pytest.fixture
def consul(mesh) -> "ConsulClient":  # noqa: ANN001
    """The mesh's Consul (catalog, health, KV)."""
    return mesh.consul_client()


@pytest.fixture
def load(mesh, tmp_path: Path) -> Iterator[Callable[..., "LoadRun"]]:  # noqa: ANN001
    """Make a Locust run against the ingress: ``with load(rps=40, duration_s=20) as run: ...; run.result()``."""
    import importlib.util

    from .errors import ComponentError
    from .load import LoadRun, for_mesh
    runs: list[LoadRun] = []

    def make(rps: float = 40, duration_s: float = 20, shape: str = "steady", path: str = "/", users: int = 10) -> LoadRun:
        if importlib.util.find_spec("locust") is None:
            raise ComponentError("the `load` fixture needs Locust, which is not installed",
                                 hint="pip install 'meshbed[load]'")
        # Locust's master + workers with --load-workers N; every process recorded in the run state
        run = for_mesh(mesh, tmp_path / f"load-{len(runs)}", users=users, user_rps=rps / users,
                       duration_s=duration_s, shape=shape, path=path)
        runs.append(run)
        return run

    yield make
    for r in runs:
        r.stop(timeout=1)
