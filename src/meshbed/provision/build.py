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
from .binaries import cached_path, find_binary
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


def build_missing(names: list[str] | None = None, progress: Progress = lambda s: print(s, file=sys.stderr)) -> dict[str, Path]:
    """Build every Go component that no user binary or cache entry provides."""
    built: dict[str, Path] = {}
    for name in names or list(GO_BINARIES):
        b = find_binary(name)
        if b.path is not None:
            progress(f"{name}: using {b.path} ({b.source})")
            continue
        if b.source.startswith("env:"):
            raise ComponentError(f"{b.source[4:]} points at a missing file for {name}", hint="fix or unset it")
        built[name] = build(name, progress)
    return built
