"""meshbed's reference xDS control plane, as its own process so suites can fault it."""

from __future__ import annotations

import sys

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle


def _ready(h: Handle) -> object:
    return httpc.get(h.url("http", "/healthz"), timeout=2).status == 200


def spec(ports: PortAllocator, consul_url: str, host: str = "127.0.0.1") -> ComponentSpec:
    p = {"xds": ports.take(), "http": ports.take()}
    argv = [sys.executable, "-m", "meshbed.controlplane", "--xds", f"{host}:{p['xds']}",
            "--http", f"{host}:{p['http']}", "--consul", consul_url]
    return ComponentSpec(
        name="controlplane", kind="controlplane", argv=argv, ports=p, host=host, pod="controlplane", env={"PYTHONUNBUFFERED": "1"},
        ready=_ready, ready_what="the control plane's first Consul sync (GET /healthz)",
        ready_hint="see the controlplane log in the run directory", stop_timeout=3.0,
    )
