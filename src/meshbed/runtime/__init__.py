"""Runtimes turn component specs into running components (process, docker)."""

from .base import ComponentSpec, Handle, Runtime, register_runtime, runtime_factory, runtime_names
from .process import ProcessRuntime

__all__ = ["ComponentSpec", "Handle", "Runtime", "ProcessRuntime", "register_runtime", "runtime_factory", "runtime_names"]
