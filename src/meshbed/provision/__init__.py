"""Finding and building the real binaries a mesh runs."""

from .binaries import Binary, find_all, find_binary, require
from .build import build_missing, go_controlplane_binary, go_controlplane_command

__all__ = ["Binary", "find_all", "find_binary", "require", "build_missing", "go_controlplane_binary",
           "go_controlplane_command"]
