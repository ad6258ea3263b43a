"""Start one Envoy the Connect way: its bootstrap from ``consul connect envoy -bootstrap``, then exec Envoy.

Run as ``python -m meshbed.components.consul_connect_launch`` in the Envoy's own directory. The
bootstrap needs the proxy registered, which the app does by itself once it is up, so the
bootstrap is retried until ``--deadline``; the process then becomes Envoy (``execv``: same
PID, so meshbed's kill, pause and restart act on Envoy itself). A restart reuses the bootstrap
Consul rendered first (same node, ports and agent), so an Envoy restarted while its app is
down (and so deregistered, RES-4's rolling restart) still starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def bootstrap(a: argparse.Namespace) -> dict:
    cmd = [a.consul, "connect", "envoy", "-http-addr", a.http_addr, "-grpc-addr", a.grpc_addr,
           "-admin-bind", a.admin_bind, "-bootstrap"]
    cmd += ["-gateway", "ingress", "-proxy-id", a.proxy_id] if a.gateway else \
        (["-sidecar-for", a.sidecar_for] if a.sidecar_for else ["-proxy-id", a.proxy_id])
    end, last = time.monotonic() + a.deadline, ""
    while True:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return json.loads(r.stdout)
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"rc {r.returncode}"]
        if time.monotonic() > end:
            sys.exit(f"consul connect envoy -bootstrap failed for {a.deadline:g} s: {last[0]} "
                     "(is the instance registered in Consul?)")
        time.sleep(0.2)


def _previous(admin_bind: str) -> dict | None:
    """The bootstrap of this Envoy's previous start, when it is a restart of the same Envoy.

    The directory is per component name, and a later instance of the same name (scaled up
    again) has other ports: its admin port tells the two apart.
    """
    try:
        with open("bootstrap.json") as fh:
            b = json.load(fh)
        sa = b["admin"]["address"]["socket_address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return b if f"{sa.get('address')}:{sa.get('port_value')}" == admin_bind else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m meshbed.components.consul_connect_launch")
    p.add_argument("--consul", required=True)
    p.add_argument("--envoy", required=True)
    p.add_argument("--http-addr", required=True)
    p.add_argument("--grpc-addr", required=True)
    p.add_argument("--admin-bind", required=True)
    p.add_argument("--sidecar-for", default="")
    p.add_argument("--proxy-id", default="")
    p.add_argument("--gateway", action="store_true")
    p.add_argument("--api-type", default="", help="override ads_config.api_type (GRPC: a SotW watcher)")
    p.add_argument("--deadline", type=float, default=30.0)
    p.add_argument("envoy_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    b = _previous(a.admin_bind) or bootstrap(a)
    if a.api_type:
        b["dynamic_resources"]["ads_config"]["api_type"] = a.api_type
    with open("bootstrap.json", "w") as fh:
        json.dump(b, fh, indent=1)
    extra = [x for x in a.envoy_args if x != "--"]
    sys.stdout.flush()
    os.execv(a.envoy, [a.envoy, "-c", "bootstrap.json", *extra])


if __name__ == "__main__":
    main()
