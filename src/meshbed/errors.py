"""The exception tree: every error meshbed raises on purpose is a MeshbedError.

A failed conformance check is a plain ``AssertionError``; these are for the
testbed itself going wrong, and each carries a one-line, actionable message.
"""

from __future__ import annotations


class MeshbedError(Exception):
    """Base of every error meshbed raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base


class ConfigError(MeshbedError):
    """Bad input: a topology field, a profile, a setting, a CLI flag."""


class ComponentError(MeshbedError):
    """A component could not be provisioned, started, or reached."""


class WaitTimeout(MeshbedError):
    """A wait ran past its deadline; the message says what it saw last."""
