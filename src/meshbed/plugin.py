"""meshbed's pytest plugin: options, markers and the mesh fixtures, in one module.

Fixtures are layered like pytest-httpserver's: settings (session) -> a
session-scoped mesh factory that starts each topology once -> a per-test
``mesh`` handle that is reset to the baseline before every test. The fixtures
checks are written with (``consul``, ``toxi``, ``load``, ``fault_log``) are in
:mod:`meshbed.fixtures`; the helpers tests call, in :mod:`meshbed.testing`.

A user's own checks are declared in catalog files (``meshbed_catalog.yaml`` or
``.py`` beside the tests, ``--meshbed-catalog``, ini ``meshbed_catalog`` or
``MESHBED_CATALOG``), loaded here before any test runs. In JUnit XML a check's
testcase is named by its id and title, its verdict and figures are properties.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .fixtures import consul, fault_log, load, toxi  # noqa: F401 - fixtures of the plugin

MARKERS = {
    "integration": "brings up a real mesh (slow)",
    "docker": "needs a Docker engine",
    "quick": "the quick tier of the conformance suites",
    "discovery": "DISC checks: discovery convergence",
    "lb": "LB checks: load-balancer spread",
    "tracing": "TRACE checks: trace completeness",
    "resilience": "RES checks: resilience under faults",
    "check(id)": "the conformance catalog id a test implements, e.g. check('DISC-1')",
    "needs_topology(*needs)": "what the check needs from the topology (meshbed.roles); skipped when it cannot host it",
}

OPTIONS = {
    # name: (help, default)
    "runtime": ("runtime to bring meshes up on: process (default) or docker", None),
    "topology": ("topology YAML for the `mesh` fixture, or the name of an example (default: basic)", None),
    "profile": ("conformance profile YAML with thresholds, or a packaged profile's name (default: default)", None),
    "state_dir": ("where run directories live (default ~/.cache/meshbed/runs)", None),
    "ready_timeout": ("seconds to wait for each start-up phase (default 90)", None),
    "controlplane": ("control plane under test: 'reference' or a command template with {xds_host} {xds_port} {consul_url} (and optionally {http_port})", None),
    "results": ("where to write the conformance results JSON (default reports/conformance.json)", None),
    "registry": ("where instances register: consul or eureka (default: the topology's registry, else consul)", None),
    "tracing": ("trace format: w3c (OTLP) or b3 (Zipkin) (default: the topology's tracing, else w3c)", None),
    "attach": ("mesh.json of a running mesh to judge instead of starting one (docs/attach.md)", None),
    "load_workers": ("Locust workers for the checks' load: 0 (default) one process, N a master and N workers "
                     "(docs/load.md)", None),
}

RESULTS_KEY = pytest.StashKey["object"]()
MESHES_KEY = pytest.StashKey["list"]()
ITEMS_KEY = pytest.StashKey["list"]()  # every collected test, before -k/-m: a re-run's -k must select one


CATALOG_HELP = ("a catalog file of your own checks (.yaml or .py; may be given several times); "
                "meshbed_catalog.{yaml,yml,py} beside the tests is found without it")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshbed", "meshbed: service-mesh testbed")
    for name, (help_, default) in OPTIONS.items():
        flag = "--meshbed-" + name.replace("_", "-")
        group.addoption(flag, dest=f"meshbed_{name}", default=default, help=help_)
        parser.addini(f"meshbed_{name}", help_, default=None)
    group.addoption("--meshbed-catalog", dest="meshbed_catalog", action="append", default=[], metavar="FILE",
                    help=CATALOG_HELP)
    parser.addini("meshbed_catalog", CATALOG_HELP + " (paths relative to the ini file)", type="paths", default=[])


def pytest_configure(config: pytest.Config) -> None:
    for name, desc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {desc}")
    from .checks.results import ResultsCollector
    config.stash[RESULTS_KEY] = ResultsCollector()
    config.stash[MESHES_KEY] = []
    _load_catalogs(config)
    _register_attach(config)
    _sigterm_unwinds()


ATTACH_KEY = pytest.StashKey["tuple"]()


class _AttachSkips:
    """With --meshbed-attach: a check whose catalog ``needs`` the attached mesh lacks is skipped at collection."""

    def __init__(self, caps: frozenset[str]) -> None:
        self.caps = caps

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        from .attach import missing
        from .checks.catalog import CATALOG
        for item in items:
            entry = CATALOG.get(_check_id(item) or "")
            why = missing(entry.needs, self.caps) if entry is not None else ""
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


def _register_attach(config: pytest.Config) -> None:
    """--meshbed-attach: read mesh.json now (a bad one is a usage error) and skip what it cannot host."""
    if not (config.getoption("meshbed_attach", None) or config.getini("meshbed_attach")
            or os.environ.get("MESHBED_ATTACH")):
        return
    from . import attach
    from .errors import ConfigError
    from .topology import load
    try:
        path = _settings_from(config).attach
        doc = attach.load(path)
        topo = load(attach.topology_path(doc, path))
    except ConfigError as exc:
        raise pytest.UsageError(f"meshbed: {exc}") from None
    config.stash[ATTACH_KEY] = (doc, topo)
    config.pluginmanager.register(_AttachSkips(attach.capabilities(doc, topo)), "meshbed-attach-skips")


def _load_catalogs(config: pytest.Config) -> None:
    """The user's own checks, registered before any profile is read (as `meshbed run` does)."""
    from .checks import catalog
    from .errors import ConfigError
    files: list[Path | str] = [*(config.getoption("meshbed_catalog", None) or []), *config.getini("meshbed_catalog"),
                               *[f for f in os.environ.get("MESHBED_CATALOG", "").split(os.pathsep) if f]]
    files += catalog.discover([a.split("::")[0] for a in config.args] or [config.invocation_params.dir],
                              config.rootpath)
    try:
        for f in files:
            catalog.load_file(f)
    except ConfigError as exc:
        raise pytest.UsageError(f"meshbed: {exc}") from None


def _sigterm_unwinds() -> None:
    """SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so fixtures tear meshes down."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def handler(signum, frame):  # noqa: ANN001
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    # fixtures normally tear meshes down; this covers an interrupted session
    for mesh in config.stash.get(MESHES_KEY, []):
        try:
            mesh.runtime.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check whose needs_topology the configured topology cannot meet is skipped now, with the reason,
    before any mesh comes up (a topology that does not load is left to the mesh fixture to report)."""
    _skip_for_registry(config, items)
    _skip_for_flavour(config, items)
    needy = [(i, [n for m in i.iter_markers("needs_topology") for n in m.args]) for i in items]
    needy = [(i, needs) for i, needs in needy if needs]
    if not needy:
        return
    from .errors import MeshbedError
    from .roles import unmet
    from .topology import load
    try:  # an attached mesh's own topology (--meshbed-attach), else the configured one
        topo = config.stash[ATTACH_KEY][1] if ATTACH_KEY in config.stash else load(_settings_from(config).topology)
    except MeshbedError:
        return
    for item, needs in needy:
        why = unmet(needs, topo)
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def target(request: pytest.FixtureRequest, mesh_session):
    """What this check works on (a meshbed.roles.Target): its needs_topology resolved on the mesh's topology."""
    from .roles import Unfit, resolve
    needs = [n for m in request.node.iter_markers("needs_topology") for n in m.args]
    if not needs:
        raise pytest.UsageError(f"{request.node.nodeid} uses the `target` fixture without @pytest.mark.needs_topology")
    try:
        return resolve(needs[0], mesh_session.topology)
    except Unfit as exc:
        pytest.skip(f"topology {mesh_session.topology.name!r} cannot host this check: {exc}")


def _skip_for_registry(config: pytest.Config, items: list[pytest.Item]) -> None:
    """registry eureka: a check that faults Consul as the service source (DISC-6) is skipped with the reason."""
    if ATTACH_KEY in config.stash:
        return
    from .checks.catalog import CATALOG
    from .components.mesh_options import unsupported
    from .errors import MeshbedError
    from .topology import load
    try:
        settings = _settings_from(config)
        registry = settings.registry or load(settings.topology).registry
    except MeshbedError:
        return
    for item in items:
        entry = CATALOG.get(_check_id(item) or "")
        why = unsupported(entry.needs, registry) if entry is not None else ""
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


def _skip_for_flavour(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check needing what the control plane's flavour cannot express is skipped with the reason (meshbed.flavour)."""
    if ATTACH_KEY in config.stash:
        return
    from .errors import MeshbedError
    from .flavour import for_controlplane
    try:
        fl = for_controlplane(_settings_from(config).controlplane)
    except MeshbedError:
        return
    for item in items:
        why = fl.check_unsupported(_check_id(item) or "")
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


def _check_id(item: pytest.Item) -> str | None:
    m = item.get_closest_marker("check")
    return str(m.args[0]) if m and m.args else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[type-arg]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_meshbed_rep_{rep.when}", rep)
    chk = getattr(item, "_meshbed_check", None)
    if rep.when == "call" and rep.failed and chk is not None and not chk.judged and not chk.result.diagnostics:
        # the test raised before judging: capture now, before its fixtures tear anything down
        _diagnose(item, chk, "call", f"the test raised before judging: {_reason(rep)[:200]}")
    cid = _check_id(item)
    if cid and rep.when == "setup":
        _junit_name(item, rep, cid)
    if cid and rep.when == "setup" and (rep.failed or rep.skipped):
        # the check never ran: still report it, as error or skipped with the reason
        from .checks.catalog import CATALOG
        from .checks.model import CheckResult
        entry = CATALOG.get(cid)
        if entry is not None:
            reason = _reason(rep)
            r = CheckResult(cid, entry.title, entry.group, verdict="skipped" if rep.skipped else "error",
                            reason=reason, nodeid=item.nodeid)
            item.config.stash[RESULTS_KEY].add(r)


def _junit_name(item: pytest.Item, rep: pytest.TestReport, cid: str) -> None:
    """With --junitxml: the testcase is named "<id>: <title>" (CI lists checks, not function names)."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it: function names stay
        return
    xml = item.config.stash.get(xml_key, None)
    from .checks.catalog import CATALOG
    entry = CATALOG.get(cid)
    if xml is None or entry is None:
        return
    callspec = getattr(item, "callspec", None)
    name = f"{cid}: {entry.title}" + (f" [{callspec.id}]" if callspec is not None else "")
    # kept through every phase (user-set attributes win over the function name) and allowed by xunit1 and xunit2
    xml.node_reporter(rep).add_attribute("name", name)


def _junit_properties(item: pytest.Item, r) -> None:  # noqa: ANN001 - a CheckResult
    """The verdict and every figure (value, unit, samples, threshold) as the testcase's JUnit properties."""
    import math
    doc = r.to_json()
    thresholds: dict[str, list[str]] = {}
    for t in doc.get("thresholds") or []:
        thresholds.setdefault(t.get("figure", ""), []).append(t.get("text") or f"{t.get('op')} {t.get('value')}")
    props = [("meshbed.check", r.id), ("meshbed.verdict", r.verdict)]
    if r.reason:
        props.append(("meshbed.reason", r.reason))
    if (r.diagnostics or {}).get("rerun"):
        props.append(("meshbed.rerun", r.diagnostics["rerun"]))
    for f in doc.get("figures") or []:
        v = f.get("value")
        text = "not measured" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.6g}"
        text += f" {f.get('unit')}".rstrip() + f" (n={f.get('n')})"
        if thresholds.get(f.get("name")):
            text += ", threshold " + " and ".join(thresholds[f["name"]])
        props.append((f"figure.{f.get('name')}", text))
    item.user_properties.extend(props)


def _reason(rep: pytest.TestReport) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    text = str(getattr(rep, "longreprtext", "") or lr or "")
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return (lines[-1][2:].strip() if lines else text.strip().splitlines()[-1] if text.strip() else "")[:500]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    collector = session.config.stash.get(RESULTS_KEY, None)
    if collector is None or not collector.results:
        return
    settings = _settings_from(session.config)
    path = Path(session.config.getoption("meshbed_results") or session.config.getini("meshbed_results")
                or settings.out_dir / "conformance.json")
    _describe_load(collector, settings, path.parent)
    collector.write(path)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        s = collector.summary()
        tr.write_line(f"meshbed: {s['pass']} pass, {s['fail']} fail, {s['error']} error, {s['skipped']} skipped "
                      f"-> {path}")
        for r in collector.results.values():  # each failed check, re-run on its own
            if r.verdict in ("fail", "error") and (r.diagnostics or {}).get("rerun"):
                tr.write_line(f"meshbed: re-run {r.id}: {r.diagnostics['rerun']}")


def _describe_load(collector, settings, out_dir: Path) -> None:  # noqa: ANN001
    """How the checks' load ran, and what meshbed's own polling costs its rate (`meshbed bench load-overhead`,
    its result beside the results JSON), for the report's environment section."""
    from .bench_load import RESULT_NAME, environment_entry
    load = {"workers": settings.load_workers,
            "locust": f"master + {settings.load_workers} workers" if settings.load_workers else "one process"}
    load.update(environment_entry(out_dir / RESULT_NAME)
                or {"polling_overhead_pct": None, "hint": "not measured: meshbed bench load-overhead"})
    collector.environment["load"] = load


SETTINGS_KEY = pytest.StashKey["object"]()


def _settings_from(config: pytest.Config):  # -> Settings (import kept lazy: no work at plugin import)
    """Built once per session, on first use, and shared by the fixtures and the session hooks.

    The topology and profile are resolved: a bare name is a packaged one, and not given means the
    packaged defaults (basic, default), so the plugin works from any directory.
    """
    if SETTINGS_KEY not in config.stash:
        from . import packaged
        from .settings import Settings
        cli = {n: config.getoption(f"meshbed_{n}") for n in OPTIONS}
        ini = {n: config.getini(f"meshbed_{n}") for n in OPTIONS}
        config.stash[SETTINGS_KEY] = packaged.with_defaults(Settings.build(cli=cli, ini=ini), cli=cli, ini=ini)
    return config.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def meshbed_settings(pytestconfig: pytest.Config):
    """The one Settings object of the session (CLI > env > ini > defaults)."""
    return _settings_from(pytestconfig)


@pytest.fixture(scope="session")
def mesh_factory(meshbed_settings, request: pytest.FixtureRequest) -> Iterator[Callable[..., object]]:
    """Start a topology (path or Topology) once per session; all are torn down at the end."""
    from .console import Progress
    from .mesh_build import bring_up
    from .topology import Topology, load

    meshes: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        def factory(topology: "str | Path | Topology | None" = None):
            topo = topology if isinstance(topology, Topology) else load(topology or meshbed_settings.topology)
            key = f"{topo.source}:{topo.name}"
            attached = request.config.stash.get(ATTACH_KEY, None)
            if attached is not None:  # --meshbed-attach: the running mesh, never a new one
                doc, atopo = attached
                if topology is not None and topo.name != atopo.name:
                    pytest.skip(f"needs topology {topo.name!r}; the attached mesh runs {atopo.name!r}")
                key = "attached"
                if key not in meshes:
                    from .attach import attach
                    meshes[key] = stack.enter_context(attach(doc, atopo, meshbed_settings, Progress()))
                    request.config.stash[MESHES_KEY].append(meshes[key])
                    _describe_environment(request.config, meshes[key], meshbed_settings)
                    stack.callback(_record_leftovers, request.config, meshes[key])
            if key not in meshes:
                meshes[key] = stack.enter_context(bring_up(topo, meshbed_settings, Progress()))
                request.config.stash[MESHES_KEY].append(meshes[key])
                _describe_environment(request.config, meshes[key], meshbed_settings)
                # runs before the mesh's teardown (LIFO): measure that the suites left nothing behind
                stack.callback(_record_leftovers, request.config, meshes[key])
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


def _record_leftovers(config: pytest.Config, mesh) -> None:
    usage = mesh.controlplane.usage()
    if usage is not None:  # the control plane's CPU and peak memory over the session (the comparison shows it)
        config.stash[RESULTS_KEY].environment["controlplane_usage"] = usage
    from .baseline import leftovers
    try:
        left = leftovers(mesh)
    except Exception as exc:  # noqa: BLE001 - a dead mesh is reported, not raised at teardown
        left = {"error": f"{type(exc).__name__}: {exc}"}
    config.stash[RESULTS_KEY].environment["leftovers_at_end"] = left


def _describe_environment(config: pytest.Config, mesh, settings) -> None:
    """Versions and sources of every component, for the report (once per session)."""
    collector = config.stash[RESULTS_KEY]
    if collector.environment.get("components"):
        return
    import dataclasses

    from . import __version__
    from .provision.binaries import find_all
    comps = {n: {"version": b.version(), "source": b.source, "path": str(b.path)} for n, b in find_all().items()}
    from .components.controlplane import split_protocol
    settings = mesh.settings  # an attached mesh's carries its control plane's kind
    base, api = split_protocol(settings.controlplane)
    proto = "delta" if api == "DELTA_GRPC" else "sotw"
    attached = config.stash.get(ATTACH_KEY, None)
    if attached is not None:  # the attached mesh's own components are not the binaries found here
        from .attach import capabilities
        comps["controlplane"] = {"version": f"attached: {settings.controlplane} ({proto})", "source": "mesh.json",
                                 "path": attached[0].source}
        collector.environment["attached"] = {"mesh_json": attached[0].source, "runtime": attached[0].runtime or None,
                                             "capabilities": sorted(capabilities(*attached))}
    elif base in ("builtin", "reference"):
        comps["controlplane"] = {"version": f"meshbed-builtin {__version__} ({proto})", "source": "meshbed.controlplane",
                                 "path": mesh.controlplane.url("http")}
    elif base == "go":
        comps["controlplane"] = {"version": f"{comps.get('cp-go', {}).get('version', 'go')} ({proto})",
                                 "source": "controlplanes/go", "path": comps.get("cp-go", {}).get("path", "")}
    elif base == "consul-connect":  # Consul's own xDS server (the consul component; docs/consul-connect.md)
        comps["controlplane"] = {"version": f"consul {comps.get('consul', {}).get('version', '?')} connect ({proto})",
                                 "source": "consul agent (connect)", "path": comps.get("consul", {}).get("path", "")}
    else:
        comps["controlplane"] = {"version": "external", "source": "command", "path": settings.controlplane}
    from .components.mesh_options import describe as describe_options
    comps.update(describe_options(mesh))  # the registry and trace format this run used
    collector.environment.update({"runtime": "attached" if attached is not None else settings.runtime,
                                  "components": comps})
    topo = mesh.topology
    collector.topology = {
        "name": topo.name, "source": topo.source,
        "services": {s.name: {"replicas": s.replicas, "calls": list(s.calls), "policy": s.policy.to_json(),
                              "instances": [dataclasses.asdict(i) for i in s.instances]}
                     for s in topo.services.values()},
        "ingress": [dataclasses.asdict(r) for r in topo.ingress],
        "chaos_links": sorted(topo.chaos_links), "mesh": topo.mesh.to_json(),
    }
    collector.phases.update({f"mesh up: {k}": round(v, 3) for k, v in mesh.timings.items()})


@pytest.fixture(scope="session")
def meshbed_profile(meshbed_settings, pytestconfig: pytest.Config):
    """The conformance profile (thresholds and parameters per check)."""
    from .checks.profile import load
    profile = load(meshbed_settings.profile)
    pytestconfig.stash[RESULTS_KEY].profile = {"name": profile.name, "source": profile.source, "checks": profile.raw.get("checks", {})}
    return profile


@pytest.fixture
def check(request: pytest.FixtureRequest, meshbed_profile):
    """The catalog check this test implements (from @pytest.mark.check('ID')); judged at the end."""
    from .checks.recorder import Check
    cid = _check_id(request.node)
    if cid is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the `check` fixture without @pytest.mark.check('ID')")
    c = Check(cid, meshbed_profile.for_check(cid), request.node.nodeid)
    c.on_failure = lambda chk: _diagnose(request.node, chk, "judge")  # before the test's own cleanup
    request.node._meshbed_check = c
    yield c
    rep = getattr(request.node, "_meshbed_rep_call", None)
    r = c.result
    if rep is not None and rep.skipped:
        r.verdict, r.reason = "skipped", _reason(rep)
    elif rep is not None and rep.failed and not c.judged:
        # the harness raised: a figure measured before that already fails still decides the verdict
        verdict, why = r.judge() if r.thresholds else ("error", "")
        if verdict == "fail":
            r.verdict, r.reason = "fail", f"{why} (then the check stopped: {_reason(rep)})"
        else:
            r.verdict, r.reason = "error", _reason(rep)
    elif not c.judged:
        r.verdict, r.reason = "error", "the test ended without judging the check"
    if r.verdict not in ("fail", "error"):
        r.diagnostics = {}
    elif not r.diagnostics:  # e.g. never judged: only now, after the test's own cleanup
        _diagnose(request.node, c, "teardown", "after the test's own cleanup: it neither judged nor raised")
    _junit_properties(request.node, r)
    request.config.stash[RESULTS_KEY].add(r)


def pytest_itemcollected(item: pytest.Item) -> None:
    item.config.stash.setdefault(ITEMS_KEY, []).append(item)


def _diagnose(item: pytest.Item, c, moment: str, note: str = "") -> None:  # noqa: ANN001 - a recorder Check
    """A failed check's diagnostics (meshbed.diagnostics): its Envoys' state, logs, a re-run command."""
    from .diagnostics import for_check, keyword_candidates
    c.result.diagnostics = for_check(item, c, item.config.stash.get(MESHES_KEY, []), _settings_from(item.config),
                                     keyword_candidates(item.config.stash.get(ITEMS_KEY, [])), moment, note)
