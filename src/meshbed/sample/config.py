"""Command-line flags parsed into one typed, immutable config.

Parsing is kept apart from the app so tests and the launcher can build a
config without touching sockets.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class HostPort:
    """A ``host:port`` pair; kept structured so Consul gets them separately."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def reachable(self) -> "HostPort":
        """A wildcard bind address is not dialable; health checks need a real one."""
        if self.host in ("0.0.0.0", "", "::"):
            return HostPort("127.0.0.1", self.port)
        return self


def parse_hostport(text: str) -> HostPort:
    """Parse ``host:port`` (or ``[v6]:port``); raise ValueError with the bad input."""
    host, sep, port_s = text.strip().rpartition(":")
    if not sep or not port_s.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return HostPort(host or "127.0.0.1", port)


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    """Turn ``key=value`` strings into a dict; Consul meta keys must be non-empty."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {pair!r}")
        meta[key.strip()] = value.strip()
    return meta


@dataclass(frozen=True)
class SampleConfig:
    """Everything one sample instance needs to know about itself and its mesh."""

    service: str
    instance: str
    listen: HostPort
    version: str = "v1"
    downstreams: tuple[str, ...] = ()
    sidecar: HostPort | None = None
    consul: str | None = None
    advertise: HostPort | None = None
    meta: dict[str, str] = field(default_factory=dict)
    otlp: str | None = None
    run_id: str = ""
    quiet: bool = False
    register_timeout: float = 10.0
    downstream_timeout: float = 30.0
    check_host: str = ""
    # Consul Connect: the registration's "Connect" block (sidecar_service), as given by meshbed
    connect: dict[str, Any] | None = None

    @property
    def check_address(self) -> HostPort:
        """Where Consul dials the health check: --check-host (a container's IP), else the listen address."""
        if self.check_host:
            return HostPort(self.check_host, self.listen.port)
        return self.listen.reachable

    @property
    def advertised(self) -> HostPort:
        """What Consul should hand out: --advertise, else the listen address."""
        return self.advertise or self.listen.reachable


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshbed.sample",
        description="meshbed sample service: one application instance in the mesh",
    )
    p.add_argument("--service", required=True, help="logical service name")
    p.add_argument("--instance", help="instance id (default: SERVICE-0)")
    p.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    p.add_argument("--version", default="v1", help="version label (default v1)")
    p.add_argument(
        "--downstream", action="append", default=[], metavar="SERVICE",
        help="service to call through the sidecar on every app request (repeatable)",
    )
    p.add_argument("--sidecar", help="HOST:PORT of the sidecar's outbound listener")
    p.add_argument("--consul", help="Consul HTTP API base URL, e.g. http://127.0.0.1:8500")
    p.add_argument("--advertise", help="HOST:PORT registered in Consul (default: --listen)")
    p.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE",
        help="extra Consul service meta (repeatable)",
    )
    p.add_argument("--otlp", help="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces")
    p.add_argument("--run-id", default=os.environ.get("MESHBED_RUN_ID", ""), help="meshbed run id")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument(
        "--register-timeout", type=float, default=10.0,
        help="seconds to keep retrying the initial Consul registration",
    )
    p.add_argument(
        "--downstream-timeout", type=float, default=30.0,
        help="total timeout per downstream call, seconds",
    )
    p.add_argument(
        "--check-host", default=os.environ.get("MESHBED_CHECK_HOST", ""),
        help="host Consul uses for the health check (default: the listen address; env MESHBED_CHECK_HOST)",
    )
    p.add_argument("--connect-json", default="", help="Consul Connect block of the registration (JSON)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> SampleConfig:
    """Parse flags; bad input exits 2 with argparse's one-line usage error."""
    parser = _build_parser()
    ns = parser.parse_args(argv)
    try:
        listen = parse_hostport(ns.listen)
        sidecar = parse_hostport(ns.sidecar) if ns.sidecar else None
        advertise = parse_hostport(ns.advertise) if ns.advertise else None
        meta = parse_meta(ns.meta)
        connect = json.loads(ns.connect_json) if ns.connect_json else None
    except ValueError as exc:
        parser.error(str(exc))
    downstreams = tuple(
        name.strip() for item in ns.downstream for name in item.split(",") if name.strip()
    )
    if downstreams and sidecar is None:
        parser.error("--downstream needs --sidecar (downstream calls go through the sidecar)")
    consul = ns.consul.rstrip("/") if ns.consul else None
    if consul and "://" not in consul:
        consul = "http://" + consul
    return SampleConfig(
        service=ns.service,
        instance=ns.instance or f"{ns.service}-0",
        listen=listen,
        version=ns.version,
        downstreams=downstreams,
        sidecar=sidecar,
        consul=consul,
        advertise=advertise,
        meta=meta,
        otlp=ns.otlp,
        run_id=ns.run_id,
        quiet=ns.quiet,
        register_timeout=ns.register_timeout,
        downstream_timeout=ns.downstream_timeout,
        check_host=ns.check_host,
        connect=connect,
    )
