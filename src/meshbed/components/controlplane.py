"""meshbed's reference xDS control plane, as its own process so suites can fault it."""

from __future__ import annotations

import sys

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle


BUILTIN = ("builtin", "reference")  # meshbed's Python control plane ("reference" is its old name)
NAMED = {"go": "meshbed's Go control plane on go-control-plane (controlplanes/go)"}
# Consul's own service mesh: no separate process, the mesh is wired by meshbed.components.consul_connect
CONNECT = "consul-connect"


PROTOCOLS = {"sotw": "GRPC", "delta": "DELTA_GRPC"}  # suffix -> Envoy's ads_config.api_type


def split_protocol(name: str) -> tuple[str, str]:
    """``go:delta`` -> (``go``, ``DELTA_GRPC``); a named control plane without a suffix speaks SotW."""
    n = name.strip()
    if n == CONNECT:  # Consul 1.14 serves delta xDS only
        return n, PROTOCOLS["delta"]
    base, sep, proto = n.rpartition(":")
    if sep and proto in PROTOCOLS and (base in BUILTIN or base in NAMED):
        return base, PROTOCOLS[proto]
    return n, PROTOCOLS["sotw"]


def is_builtin(name: str) -> bool:
    return split_protocol(name)[0] in BUILTIN


def is_connect(name: str) -> bool:
    """``--controlplane consul-connect``: Consul's own xDS server, the mesh wired the Connect way."""
    return name.strip() == CONNECT


def template_for(name: str) -> str | None:
    """The command template a --controlplane value stands for (None: the builtin one, run in-tree,
    or consul-connect, which is Consul itself and is wired by ``components.consul_connect``).

    Named control planes take ``:delta`` (or ``:sotw``) to choose the xDS protocol the Envoys use.
    """
    n = split_protocol(name)[0]
    if n in BUILTIN or n == CONNECT:
        return None
    if n == "go":
        from ..provision import go_controlplane_command
        return go_controlplane_command()
    if "{xds_port}" not in n:
        from ..errors import ConfigError
        raise ConfigError(f"--controlplane {n!r}: not a named control plane ({', '.join((*BUILTIN[:1], *NAMED, CONNECT))}) "
                          "nor a command template with {xds_port}",
                          hint='e.g. --controlplane go, or "my-cp --ads {xds_host}:{xds_port} --consul {consul_url}"')
    return n


def _ready(h: Handle) -> object:
    return httpc.get(h.url("http", "/healthz"), timeout=2).status == 200


def spec(ports: PortAllocator, consul_url: str, host: str = "127.0.0.1", eureka_url: str = "") -> ComponentSpec:
    p = {"xds": ports.take(), "http": ports.take()}
    argv = [sys.executable, "-m", "meshbed.controlplane", "--xds", f"{host}:{p['xds']}",
            "--http", f"{host}:{p['http']}", "--consul", consul_url]
    if eureka_url:  # registry: eureka (services from Eureka, policy from Consul KV)
        argv += ["--eureka", eureka_url]
    return ComponentSpec(
        name="controlplane", kind="controlplane", argv=argv, ports=p, host=host, pod="controlplane", env={"PYTHONUNBUFFERED": "1"},
        ready=_ready, ready_what="the control plane's first Consul sync (GET /healthz)",
        ready_hint="see the controlplane log in the run directory", stop_timeout=3.0,
    )


def _xds_listening(h: Handle) -> object:
    import socket
    with socket.create_connection(("127.0.0.1", h.spec.ports["xds"]), timeout=1):
        return True


def external_spec(template: str, ports: PortAllocator, consul_url: str, host: str = "127.0.0.1") -> ComponentSpec:
    """Your own control plane, run and faulted by meshbed like its own.

    ``template`` is a command line with placeholders: {xds_host} {xds_port}
    (where it must serve ADS), {consul_url}, and optionally {http_port} (a
    port it may use for anything, e.g. a debug API). Readiness is its xDS
    port accepting connections; Envoys' /ready then proves it serves config.
    """
    import shlex

    from ..errors import ConfigError
    p = {"xds": ports.take(), "http": ports.take()}
    if "{xds_port}" not in template:
        raise ConfigError("controlplane command must contain {xds_port} (where it serves ADS)",
                          hint='e.g. --controlplane "my-cp --ads {xds_host}:{xds_port} --consul {consul_url}"')
    try:
        argv = shlex.split(template.format(xds_host=host, xds_port=p["xds"], http_port=p["http"], consul_url=consul_url))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"controlplane command: bad placeholder or quoting: {exc}",
                          hint="placeholders: {xds_host} {xds_port} {http_port} {consul_url}") from None
    if "{http_port}" not in template:
        del p["http"]
    import shutil
    if not argv or (shutil.which(argv[0]) is None):
        raise ConfigError(f"controlplane command: {argv[0] if argv else '(empty)'!r} is not an executable on PATH",
                          hint="give the full path of your control plane's binary")
    return ComponentSpec(
        name="controlplane", kind="controlplane", argv=argv, ports=p, host=host, pod="controlplane",
        ready=_xds_listening, ready_what="the control plane's xDS port to accept connections",
        ready_hint="see the controlplane log in the run directory", stop_timeout=3.0,
    )
