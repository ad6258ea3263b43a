"""Runtimes turn component specs into running components (process, docker)."""

from .base import ComponentSpec, Handle, Runtime, register_runtime, runtime_factory, runtime_names
from .process import ProcessRuntime

try:  # registers the "docker" runtime and its sweeper; nothing else happens until DockerRuntime.open()
    from . import docker as _docker  # noqa: F401
except ImportError:  # pragma: no cover - a broken install must not break the process runtime
    pass

__all__ = ["ComponentSpec", "Handle", "Runtime", "ProcessRuntime", "register_runtime", "runtime_factory", "runtime_names"]
