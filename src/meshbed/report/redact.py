"""Redaction of reports: no home directory, cache location or host name in a page meant to be shared.

A results document carries absolute paths (the binaries, the topology, the
command line, logs and config dumps in the diagnostics) and may carry the
machine's name. Before `meshbed run` and `meshbed report` write it, every
string in it is rewritten:

- the current directory (the checkout, usually) -> ``.``, so paths read relative;
- the cache (``$MESHBED_CACHE``, default ``~/.cache/meshbed``) -> ``~/.cache/meshbed``
  when under the home directory, else ``<cache>``;
- the home directory -> ``~``;
- the host name (short and fully qualified) -> ``<host>``.

Only whole path prefixes and whole names are replaced: ``/work/main`` is not
touched inside ``/work/mainline``, a host called ``vm`` not inside ``vm_config``.
``--no-redact`` keeps everything as it was.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

HOST = "<host>"
CACHE = "<cache>"
_NAME = r"[\w.-]"
_NOT_LOCAL = {"", "localhost", "localhost.localdomain", "localdomain", "(none)"}


@dataclass(frozen=True)
class Redactor:
    """An ordered list of (pattern, replacement): longer path prefixes first."""
    rules: tuple[tuple[re.Pattern[str], str], ...]

    def text(self, s: str) -> str:
        for pattern, repl in self.rules:
            s = pattern.sub(repl, s)
        return s

    def value(self, v: Any) -> Any:
        """``v`` with every string in it redacted (mapping keys too); a new structure, ``v`` is left as it was."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(x) for x in v]
        return v


def _forms(path: str | Path | None) -> list[str]:
    """A directory as given and as resolved (a symlinked home is written both ways)."""
    if not path:
        return []
    out = []
    for p in (os.path.abspath(os.path.expanduser(str(path))), os.path.realpath(os.path.expanduser(str(path)))):
        p = p.rstrip("/")
        if p and p != "/" and p not in out:
            out.append(p)
    return out


def _path_rule(prefix: str, repl: str) -> tuple[re.Pattern[str], str]:
    # a whole path prefix: not preceded by a name character, and followed by '/' or the end of the name
    return re.compile(rf"(?<!{_NAME}){re.escape(prefix)}(?![\w-]|\.[\w-])"), repl


def _host_rule(name: str) -> tuple[re.Pattern[str], str]:
    return re.compile(rf"(?<!{_NAME}){re.escape(name)}(?![\w-]|\.[\w-])"), HOST


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def default_cache() -> str:
    base = os.environ.get("MESHBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "meshbed")
    return base


def host_names() -> list[str]:
    names = []
    for n in (socket.getfqdn(), socket.gethostname()):
        n = (n or "").strip()
        if n.lower() not in _NOT_LOCAL and n not in names:
            names.append(n)
    return names


def redactor(cwd: str | Path | None = None, home: str | Path | None = None, cache: str | Path | None = None,
             hosts: Iterable[str] | None = None) -> Redactor:
    """The rules for this machine (each argument defaults to this process's view of it)."""
    homes = _forms(home if home is not None else os.path.expanduser("~"))
    caches = _forms(cache if cache is not None else default_cache())
    cwds = _forms(cwd if cwd is not None else os.getcwd())
    prefixes: list[tuple[str, str]] = []
    for c in caches:  # outside the home directory: a placeholder (inside, `~` says it)
        if not any(_within(c, h) for h in homes):
            prefixes.append((c, CACHE))
    for d in cwds:
        # the working directory reads relative, unless it is the home directory itself or above it, or inside
        # the cache (then the rules below say more)
        if any(_within(h, d) for h in homes) or any(_within(d, c) for c in caches):
            continue
        prefixes.append((d, "."))
    prefixes += [(h, "~") for h in homes]
    prefixes.sort(key=lambda pr: -len(pr[0]))  # the most specific first
    rules = [_path_rule(p, r) for p, r in prefixes]
    names = list(hosts) if hosts is not None else host_names()
    names = sorted({n for n in names if n and n.lower() not in _NOT_LOCAL}, key=len, reverse=True)
    rules += [_host_rule(n) for n in names]
    return Redactor(tuple(rules))


def redact(doc: dict[str, Any], r: Redactor | None = None) -> dict[str, Any]:
    """A copy of the results document with home, cache, working directory and host name redacted."""
    out = (r or redactor()).value(doc)
    out["redacted"] = True
    return out
