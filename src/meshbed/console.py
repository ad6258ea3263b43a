"""Progress lines and endpoint tables for people; JSON for machines."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Timestamped progress lines on stderr (stdout stays clean for --json)."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.start = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.start:6.1f}s] {msg}", file=self.stream, flush=True)


def error_line(text: str, limit: int = 2000) -> str:
    """An error message as exactly one line: control characters escaped (a path may hold a newline), length capped."""
    from .safeio import one_line
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def endpoints_table(ep: dict[str, Any]) -> str:
    rows = [
        ("run", f"{ep['run_id']}  ({ep['runtime']}, topology {ep['topology']})"),
        ("ingress", ep.get("ingress_url") or "-"),
        ("control plane", f"xds {ep['controlplane']['xds']}  debug {ep['controlplane'].get('debug_url') or '-'}"),
        ("consul", ep["consul_url"]),
        ("jaeger query", ep["jaeger_query_url"]),
        ("toxiproxy api", ep["toxiproxy_api"]),
    ]
    rows += [(f"envoy {n}", url) for n, url in ep.get("envoy_admin", {}).items()]
    rows.append(("run dir", ep["run_dir"]))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
