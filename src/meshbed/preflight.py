"""Before anything starts: can this machine run a mesh at all? One line (exit 2) when it cannot.

`meshbed up` and `meshbed run` run the same checks, so a broken environment
is one line from either of them, and never 700 lines of check errors from a
pytest session that could not have worked:

- the binaries given by environment (MESHBED_ENVOY & co.) name files, not directories;
- every component binary is found, and answers its version flag (an Envoy
  that cannot execute here fails now, not in the middle of a start-up);
- the state directory can be created and written;
- a loopback TCP port in meshbed's range can be bound;
- the runtime works here (the Docker engine answers, for ``--runtime docker``);
- a ``--controlplane`` command template names an executable and has its placeholders.

Everything here is read-only apart from the state directory itself (created
0700 when missing, as the run would create it).
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import ConfigError, MeshbedError
from .safeio import check_writable_dir, one_line, show
from .settings import Settings

COMPONENTS = ("envoy", "consul", "jaeger", "toxiproxy")
VERSION_TIMEOUT_S = 20.0


def check_binary_overrides() -> None:
    """MESHBED_ENVOY & co. must name an executable file: a directory is said to be one, never 'chmod +x' it."""
    from .provision.binaries import COMPONENTS as ALL
    from .provision.versions import GO_BINARIES
    for name in ALL:
        var = "MESHBED_ENVOY" if name == "envoy" else GO_BINARIES[name].env_var
        value = os.environ.get(var)
        if not value:
            continue
        p = Path(value)
        if p.is_dir():
            raise ConfigError(f"{var}={show(value)} is a directory; point it at the {name} binary itself",
                              hint=f"unset {var} to use meshbed's own {name}")
        if p.is_file() and not os.access(p, os.X_OK):
            raise ConfigError(f"{var}={show(value)} is not executable", hint=f"chmod +x {show(value)}")


def _answers(name: str, path: Path) -> str:
    """'' when the binary runs here and answers its version flag; else what went wrong."""
    from .provision.versions import GO_BINARIES
    args = ["--version"] if name == "envoy" else list(GO_BINARIES[name].version_args)
    try:
        out = subprocess.run([str(path), *args], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=VERSION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`{show(path)} {' '.join(args)}` did not answer within {VERSION_TIMEOUT_S:.0f}s"
    except OSError as exc:
        return f"cannot execute {show(path)}: {exc.strerror or exc}"
    if out.returncode != 0:
        last = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
        said = f": {one_line(last[-1])[:160]}" if last else " (no output)"
        return f"`{show(path)} {' '.join(args)}` exited with {out.returncode}{said}"
    return ""


def check_binaries() -> None:
    """Every component binary is found and runs (their version flags, in parallel: ~0.1 s in all)."""
    from .provision.binaries import find_binary, fix_hint
    found = {}
    for name in COMPONENTS:
        b = find_binary(name)
        if b.path is None:
            raise ConfigError(f"{name} binary not found ({b.source})", hint=fix_hint(b))
        found[name] = b
    with ThreadPoolExecutor(max_workers=len(found)) as pool:
        answers = dict(zip(found, pool.map(lambda n: _answers(n, found[n].path), found)))
    for name, problem in answers.items():
        if problem:
            b = found[name]
            hint = (f"point {b.source[4:]} at a working {name}, or unset it" if b.source.startswith("env:")
                    else "`meshbed doctor` shows where each binary comes from")
            raise ConfigError(f"{name} binary is not usable: {problem}", hint=hint)


def check_ports() -> None:
    """A loopback port in meshbed's range can be bound (no sandbox forbids it, the range is not full)."""
    from .ports import PortAllocator
    try:
        PortAllocator().take()
    except MeshbedError as exc:
        raise ConfigError(exc.args[0], hint=exc.hint) from None


def check_runtime(runtime: str) -> None:
    from .runtime import runtime_factory, runtime_names
    if runtime not in runtime_names():
        raise ConfigError(f"unknown runtime {runtime!r}; available: {', '.join(runtime_names())}")
    try:
        runtime_factory(runtime).preflight()  # type: ignore[attr-defined]  # e.g. no Docker engine
    except ConfigError:
        raise
    except MeshbedError as exc:
        raise ConfigError(exc.args[0], hint=exc.hint) from None


def check_controlplane(name: str) -> None:
    """A --controlplane command template names an executable and has its placeholders (a named one, e.g.
    go, is found or built here), so a detached `up` does not find out in its supervisor."""
    from .components import controlplane as cp_c
    from .ports import PortAllocator
    try:
        template = cp_c.template_for(name)
        if template is not None:
            cp_c.external_spec(template, PortAllocator(), "http://127.0.0.1:1")
    except ConfigError:
        raise
    except MeshbedError as exc:
        raise ConfigError(exc.args[0], hint=exc.hint) from None


def check_environment(settings: Settings, *, binaries: bool = True) -> None:
    """All of the above, cheapest first; the first problem is one ConfigError line (exit 2)."""
    check_binary_overrides()
    check_writable_dir(settings.runs_dir, "state directory")
    if binaries:
        check_binaries()
    check_ports()
    check_runtime(settings.runtime)
    check_controlplane(settings.controlplane)
