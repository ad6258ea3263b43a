"""The sample service: a small aiohttp app standing for one instance in the mesh.

Run it with ``python -m meshbed.sample --service NAME --listen HOST:PORT ...``;
see :mod:`meshbed.sample.config` for the flags.
"""

from __future__ import annotations

from .config import SampleConfig, parse_args

__all__ = ["SampleConfig", "parse_args"]
