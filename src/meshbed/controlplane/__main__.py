"""CLI: ``python -m meshbed.controlplane --xds H:P --http H:P --consul URL``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .server import main_async, split_host_port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m meshbed.controlplane",
                                description="meshbed reference xDS control plane (SotW ADS over Consul)")
    p.add_argument("--xds", required=True, help="gRPC ADS listen address, HOST:PORT")
    p.add_argument("--http", required=True, help="debug HTTP listen address, HOST:PORT")
    p.add_argument("--consul", required=True, help="Consul HTTP API base URL, e.g. http://127.0.0.1:8500")
    p.add_argument("--consul-wait", type=float, default=30.0, help="blocking query wait, seconds (default 30)")
    p.add_argument("--eureka", help="Eureka REST base URL (registry: eureka): services from there, policy from Consul KV")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--mutant", help="plant one bug (meshbed selftest; see meshbed.controlplane.mutants)")
    a = p.parse_args(argv)
    if a.mutant is not None:
        from .mutants import MUTANTS
        if a.mutant not in MUTANTS:
            p.error(f"--mutant: {a.mutant!r} is not a mutant; known: {', '.join(MUTANTS)}")
    for flag in ("xds", "http"):
        try:
            split_host_port(getattr(a, flag))
        except ValueError as exc:
            p.error(f"--{flag}: {exc}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=a.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.mutant:
        from .mutants import apply
        m = apply(a.mutant)
        logging.getLogger("meshbed.controlplane").warning("MUTANT %s planted: %s", m.name, m.description)
    try:
        asyncio.run(main_async(a.xds, a.http, a.consul, consul_wait_s=a.consul_wait, eureka=a.eureka))
    except OSError as exc:
        logging.getLogger("meshbed.controlplane").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
