"""A component that cannot start gives one line: what failed, its last words, where the log is."""

from __future__ import annotations

import sys

import pytest

from meshbed.errors import ComponentError
from meshbed.readiness import wait_ready
from meshbed.runtime.base import ComponentSpec
from meshbed.runtime.process import ProcessRuntime


def test_component_dying_at_start_is_one_line(tmp_path):
    rt = ProcessRuntime(tmp_path)
    try:
        h = rt.start(ComponentSpec(
            name="doomed", kind="app",
            argv=[sys.executable, "-c", "import sys; print('starting'); sys.exit('bind 127.0.0.1:1234: address already in use')"],
            ready=lambda h: False, ready_what="never"))
        with pytest.raises(ComponentError) as ei:
            wait_ready(h, deadline=20)
        msg = str(ei.value)
        assert "\n" not in msg
        assert "doomed exited during start-up (exit code 1): bind 127.0.0.1:1234: address already in use" in msg
        assert "full log:" in msg
    finally:
        rt.close()


def test_missing_binary_is_one_line(tmp_path):
    rt = ProcessRuntime(tmp_path)
    try:
        with pytest.raises(ComponentError) as ei:
            rt.start(ComponentSpec(name="ghost", kind="app", argv=[str(tmp_path / "no-such-binary")]))
        assert "\n" not in str(ei.value) and "file not found" in str(ei.value) and "meshbed doctor" in str(ei.value)
    finally:
        rt.close()
