"""meshbed: a testbed and conformance suite for Envoy service meshes."""

__version__ = "0.1.0"
