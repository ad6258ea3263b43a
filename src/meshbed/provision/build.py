"""Build the Go components from the Go module proxy, once, into the cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import ComponentError
from . import gocp
from .binaries import cache_dir, cached_path, find_binary
from .versions import GO_BINARIES

Progress = Callable[[str], None]


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
        cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_out), spec.package]
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
            if now - last_report >= 10:
                progress(f"  {name}: {n} packages compiled, {now - start:.0f}s")
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
    progress(f"built {name} {spec.version} in {time.monotonic() - start:.0f}s -> {out}")
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
    for name in names or list(GO_BINARIES):
        b = find_binary(name)
        if b.path is not None:
            progress(f"{name}: using {b.path} ({b.source})")
            continue
        if b.source.startswith("env:"):
            raise ComponentError(f"{b.source[4:]} points at a missing file for {name}", hint="fix or unset it")
        built[name] = build(name, progress)
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
