"""A sample service instance (meshbed.sample), registered in Consul by itself."""

from __future__ import annotations

import sys

from .. import httpc
from ..runtime.base import ComponentSpec, Handle
from ..topology import InstanceSpec


def _ready(h: Handle) -> object:
    return httpc.get(h.url("http", "/healthz"), timeout=2).status == 200


def spec(inst: InstanceSpec, port: int, *, calls: tuple[str, ...], sidecar_outbound: str, consul_url: str,
         advertise: str, otlp_http_url: str, run_id: str, host: str = "127.0.0.1",
         env: dict[str, str] | None = None) -> ComponentSpec:
    argv = [sys.executable, "-m", "meshbed.sample", "--service", inst.service, "--instance", inst.id,
            "--listen", f"{host}:{port}", "--version", inst.version, "--consul", consul_url,
            "--advertise", advertise, "--otlp", otlp_http_url, "--run-id", run_id, "--quiet",
            "--meta", f"priority={inst.priority}", "--meta", f"zone={inst.zone}"]
    if calls:
        argv += ["--sidecar", sidecar_outbound]
        for c in calls:
            argv += ["--downstream", c]
    return ComponentSpec(
        name=f"app-{inst.id}", kind="app", argv=argv, ports={"http": port}, host=host, pod=inst.id, env={"PYTHONUNBUFFERED": "1", **(env or {})},
        ready=_ready, ready_what=f"sample service {inst.id} (GET /healthz)", stop_timeout=4.0,
    )
