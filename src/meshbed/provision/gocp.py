"""meshbed's second control plane, in Go (``controlplanes/go``), built from the local sources.

Unlike consul/jaeger/toxiproxy it is not a pinned upstream version but a
module in this repository: its "version" is a hash of its sources (every
non-test ``.go`` file plus ``go.mod``/``go.sum``), which is also part of the
cached binary's name, so editing the sources makes the next build a fresh
one and a stale binary is never picked up. ``MESHBED_CP_GO`` names your own
binary instead. An installed wheel has no ``controlplanes/go``: the component
is then reported unavailable (it is optional; the reference control plane is
the default).

    from meshbed.provision import go_controlplane_binary, go_controlplane_command
    path = go_controlplane_binary()          # builds it first if needed
    template = go_controlplane_command()     # for --controlplane / Settings.controlplane
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import ComponentError

NAME = "cp-go"  # the component name in `meshbed doctor` and reports
ENV_VAR = "MESHBED_CP_GO"  # your own binary
SRC_ENV_VAR = "MESHBED_CP_GO_SRC"  # another checkout of controlplanes/go
BINARY = "meshbed-cp-go"
PACKAGE = "./cmd/meshbed-cp-go"
MIN_GO = "1.26.7"  # go.mod's go line (consul/api v1.34.5 needs it); GOTOOLCHAIN=auto fetches it
VERSION_ARGS = ("-version",)
KEEP_BUILDS = 3  # builds kept in the cache: a detached mesh may still restart an older one

Progress = Callable[[str], None]


def source_dir() -> Path | None:
    """The module's directory: $MESHBED_CP_GO_SRC, else controlplanes/go next to src/ in a checkout."""
    env = os.environ.get(SRC_ENV_VAR)
    cand = Path(env) if env else Path(__file__).resolve().parents[3] / "controlplanes" / "go"
    return cand if (cand / "go.mod").is_file() else None


def unavailable_reason() -> str:
    env = os.environ.get(SRC_ENV_VAR)
    if env:
        return f"{SRC_ENV_VAR}={env} has no go.mod"
    return "no controlplanes/go sources (meshbed installed without its repository); set MESHBED_CP_GO to a built binary"


def _source_files(src: Path) -> list[Path]:
    files = [src / "go.mod", src / "go.sum"]
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and d not in ("testdata", "vendor"))
        files += [Path(root) / n for n in names if n.endswith(".go") and not n.endswith("_test.go")]
    return sorted(f for f in files if f.is_file())


def source_hash(src: Path) -> str:
    """12 hex digits over the sources' relative paths and contents (tests excluded: they do not change the binary)."""
    h = hashlib.sha256()
    for f in _source_files(src):
        h.update(f.relative_to(src).as_posix().encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def cached_binary(cache_bin: Path, version: str) -> Path:
    """Where the build of sources with hash ``version`` lives."""
    return cache_bin / f"{BINARY}-{version}"


def _prune(cache_bin: Path, keep: Path) -> None:
    builds = sorted((p for p in cache_bin.glob(f"{BINARY}-*") if p != keep), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        old.unlink(missing_ok=True)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise ComponentError(
            "the Go toolchain is not on PATH, so the Go control plane cannot be built",
            hint=f"install Go >= {MIN_GO} (or any Go with GOTOOLCHAIN=auto), or set {ENV_VAR}=/path/to/{BINARY}")
    return go


def build(cache_bin: Path, progress: Progress = lambda s: None, force: bool = False) -> Path:
    """``go build -trimpath`` of the local module into the cache; a no-op when this source hash is built."""
    src = source_dir()
    if src is None:
        raise ComponentError(f"{NAME}: {unavailable_reason()}")
    out = cached_binary(cache_bin, source_hash(src))
    if out.exists() and not force:
        return out
    go = _go()
    cache_bin.mkdir(parents=True, exist_ok=True)
    # one build at a time (two pytest sessions may ask at once); the loser finds the result
    with open(cache_bin / f".{BINARY}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = source_hash(src)  # the sources may have changed while waiting
        out = cached_binary(cache_bin, version)
        if out.exists() and not force:
            return out
        start = time.monotonic()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=cache_bin)
        os.close(fd)
        tmp_out = Path(tmp_name)
        cmd = [go, "build", "-mod=readonly", "-buildvcs=false", "-trimpath",
               "-ldflags", f"-s -w -X main.version={version}", "-o", str(tmp_out), PACKAGE]
        progress(f"building {NAME} {version} (go build {PACKAGE} in {src}) ...")
        try:
            proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tmp_out.unlink(missing_ok=True)
            raise ComponentError(f"building {NAME} failed: {exc}", hint=f"or set {ENV_VAR}=/path/to/{BINARY}") from None
        if proc.returncode != 0:
            tmp_out.unlink(missing_ok=True)
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-3:]
            raise ComponentError(
                f"building {NAME} failed (go build exit {proc.returncode}): {' | '.join(tail)}",
                hint=f"it needs Go >= {MIN_GO} (GOTOOLCHAIN=auto fetches it) and the Go module proxy; "
                f"or set {ENV_VAR}=/path/to/{BINARY}")
        tmp_out.chmod(0o755)
        tmp_out.replace(out)
        _prune(cache_bin, out)
        progress(f"built {NAME} {version} in {time.monotonic() - start:.1f}s -> {out}")
        return out


def command_template(binary: Path | str) -> str:
    """A --controlplane command template running ``binary`` with its debug API on {http_port}."""
    import shlex
    return (f"{shlex.quote(str(binary))} -xds {{xds_host}}:{{xds_port}} -consul {{consul_url}} "
            "-http 127.0.0.1:{http_port}")
