"""Toxiproxy server: the links a topology puts under chaos run through it."""

from __future__ import annotations

from pathlib import Path

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle


def _ready(h: Handle) -> object:
    return httpc.get(h.url("api", "/version"), timeout=2).status == 200


def spec(binary: Path, ports: PortAllocator, host: str = "127.0.0.1") -> ComponentSpec:
    p = {"api": ports.take()}
    return ComponentSpec(
        name="toxiproxy", kind="toxiproxy", argv=[str(binary), "-host", host, "-port", str(p["api"])],
        ports=p, host=host, pod="toxiproxy", ready=_ready, ready_what="Toxiproxy's API (GET /version)",
    )
