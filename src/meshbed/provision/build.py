"""Build the Go components from the Go module proxy, once, into the cache.

The builds run concurrently (downloads of one overlap another's compiling;
each link step is single-threaded), share Go's one module and build cache,
and are reproducible (-trimpath, -buildvcs=false). Each reports its packages
compiled and an ETA from the package count of the last build of that
version (stored in the cache), else from a shipped estimate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import ComponentError, ConfigError
from . import gocp
from .binaries import cache_dir, cached_path, find_binary
from .versions import GO_BINARIES

Progress = Callable[[str], None]
# packages `go build -v` compiles from a cold cache (measured here 2026-12-03: 1709, 2404, 278; the ETA's prior until a build records its own)
EXPECTED_PACKAGES = {"consul": 1710, "jaeger": 2400, "toxiproxy": 280}
REPORT_EVERY_S = 10.0
_stats_lock = threading.Lock()


def _stats_path() -> Path:
    return cache_dir() / "build-stats.json"


def _expected_packages(name: str, version: str) -> int:
    try:
        return int(json.loads(_stats_path().read_text())[f"{name}-{version}"]["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        return EXPECTED_PACKAGES.get(name, 0)


def _record_build(name: str, version: str, packages: int, seconds: float) -> None:
    """Remember how many packages this build compiled (the next cold build's ETA)."""
    with _stats_lock:
        try:
            data = json.loads(_stats_path().read_text())
        except (OSError, ValueError):
            data = {}
        if packages > 20:  # a warm-cache build compiles next to nothing: it says nothing about a cold one
            data[f"{name}-{version}"] = {"packages": packages, "seconds": round(seconds, 1)}
            _stats_path().parent.mkdir(parents=True, exist_ok=True)
            _stats_path().write_text(json.dumps(data, indent=2))


def eta_line(name: str, n: int, expected: int, elapsed: float) -> str:
    """``jaeger: 412/1500 packages, 95s, ETA 250s`` (no ETA before there is a rate, or past the estimate)."""
    line = f"  {name}: {n}/{expected or '?'} packages, {elapsed:.0f}s"
    if n >= 10 and expected > n:
        line += f", ETA {elapsed / n * (expected - n):.0f}s"
    return line


def _wrapper_dir(name: str) -> Path:
    return Path(str(resources.files("meshbed.provision") / "gobuild" / GO_BINARIES[name].wrapper))


def go_toolchain() -> str:
    go = shutil.which("go")
    if not go:
        raise ComponentError(
            "the Go toolchain is not on PATH, so consul/jaeger/toxiproxy cannot be built",
            hint="install Go >= 1.24 (e.g. apt-get install golang-go, or go.dev/dl), or point "
            "MESHBED_CONSUL/MESHBED_JAEGER/MESHBED_TOXIPROXY at your own binaries",
        )
    return go


def build(name: str, progress: Progress = lambda s: None, force: bool = False) -> Path:
    """Build one Go binary into the cache; a no-op when it is already there."""
    spec = GO_BINARIES[name]
    out = cached_path(name)
    if out.exists() and not force:
        return out
    go = go_toolchain()
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"meshbed-build-{name}-") as tmp:
        work = Path(tmp) / "mod"
        shutil.copytree(_wrapper_dir(name), work)
        tmp_out = out.with_suffix(".partial")
        env = dict(os.environ)
        env.setdefault("GOFLAGS", "-mod=mod")
        ldflags = " ".join(["-s", "-w", *(f"-X {x}" for x in spec.x_flags)])
        cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", str(tmp_out),
               spec.package]
        expected = _expected_packages(name, spec.version)
        progress(f"building {name} {spec.version} (go build {spec.package}) ...")
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        tail: list[str] = []
        n = 0
        last_report = start
        for line in proc.stdout:
            n += 1
            tail = (tail + [line.rstrip()])[-20:]
            now = time.monotonic()
            if now - last_report >= REPORT_EVERY_S:
                progress(eta_line(name, n, expected, now - start))
                last_report = now
        rc = proc.wait()
        if rc != 0:
            tmp_out.unlink(missing_ok=True)
            raise ComponentError(
                f"building {name} {spec.version} failed (go build exit {rc}): {' | '.join(tail[-3:])}",
                hint="check network access to the Go module proxy, or set "
                f"{spec.env_var}=/path/to/your/{spec.path_names[0]}",
            )
        tmp_out.replace(out)
    took = time.monotonic() - start
    _record_build(name, spec.version, n, took)
    progress(f"built {name} {spec.version} in {took:.0f}s ({n} packages) -> {out}")
    return out


def go_controlplane_binary(progress: Progress = lambda s: None, rebuild: bool = False) -> Path:
    """Path of the Go control plane (controlplanes/go): $MESHBED_CP_GO, else built into the cache first if needed.

    The cached binary is named by a hash of its sources, so a source change
    means one rebuild (seconds once Go's build cache is warm). ComponentError
    (one line) when it cannot be had: no sources (an installed wheel), no Go,
    or a failed build.
    """
    b = find_binary(gocp.NAME)
    if b.source.startswith("env:"):
        if b.path is None:
            raise ComponentError(f"{gocp.ENV_VAR}={os.environ.get(gocp.ENV_VAR)} is not an executable file",
                                 hint="fix the path or unset it to build controlplanes/go")
        return b.path
    if b.path is not None and not rebuild:
        return b.path
    return gocp.build(cache_dir() / "bin", progress, force=rebuild)


def go_controlplane_command(progress: Progress = lambda s: None) -> str:
    """A ready --controlplane template for the Go control plane (building it if needed)."""
    return gocp.command_template(go_controlplane_binary(progress))


def build_missing(names: list[str] | None = None, progress: Progress = lambda s: print(s, file=sys.stderr)) -> dict[str, Path]:
    """Build every Go component that no user binary or cache entry provides.

    Without ``names`` that includes the Go control plane, last: it is optional,
    so without its sources (an installed wheel) or when its build fails, that
    is reported and the others still count as provisioned.
    """
    built: dict[str, Path] = {}
    unknown = [n for n in names or [] if n not in GO_BINARIES]
    if unknown:
        raise ConfigError(f"cannot provision {', '.join(unknown)}: known Go components are {', '.join(GO_BINARIES)}")
    todo = []
    for name in names or list(GO_BINARIES):
        b = find_binary(name)
        if b.path is not None:
            progress(f"{name}: using {b.path} ({b.source})")
            continue
        if b.source.startswith("env:"):
            raise ComponentError(f"{b.source[4:]} points at a missing file for {name}", hint="fix or unset it")
        todo.append(name)
    if todo:
        t0 = time.monotonic()
        progress(f"building {', '.join(todo)} concurrently (Go's shared module and build caches)")
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = {n: pool.submit(build, n, progress) for n in todo}
            errors = []
            for n, f in futures.items():
                try:
                    built[n] = f.result()
                except ComponentError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
        progress(f"built {', '.join(todo)} in {time.monotonic() - t0:.0f}s")
    if names is None:
        cp = find_binary(gocp.NAME)
        if cp.path is not None:
            progress(f"{gocp.NAME}: using {cp.path} ({cp.source})")
        elif cp.source.startswith("unavailable"):
            progress(f"{gocp.NAME}: skipped (optional): {cp.source.removeprefix('unavailable: ')}")
        else:
            try:
                built[gocp.NAME] = go_controlplane_binary(progress)
            except ComponentError as exc:
                progress(f"{gocp.NAME}: not built (optional; `meshbed doctor` lists it missing): {exc}")
    return built
