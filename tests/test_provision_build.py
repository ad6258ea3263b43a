"""Provisioning's bookkeeping (pure logic): the ETA line, the package counts it learns, `--only`."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbed.errors import ConfigError
from meshbed.provision import build
from meshbed.provision.build import EXPECTED_PACKAGES, eta_line


def test_eta_from_the_rate_so_far() -> None:
    assert eta_line("jaeger", 100, 1500, 50.0) == "  jaeger: 100/1500 packages, 50s, ETA 700s"


def test_no_eta_before_a_rate_or_past_the_estimate() -> None:
    assert "ETA" not in eta_line("consul", 3, 1100, 5.0)
    assert "ETA" not in eta_line("consul", 1200, 1100, 500.0)
    assert eta_line("x", 50, 0, 10.0) == "  x: 50/? packages, 10s"


def test_a_cold_build_teaches_the_next_eta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHBED_CACHE", str(tmp_path))
    assert build._expected_packages("jaeger", "1.76.0") == EXPECTED_PACKAGES["jaeger"]  # the shipped prior
    build._record_build("jaeger", "1.76.0", 1234, 300.0)
    assert build._expected_packages("jaeger", "1.76.0") == 1234
    build._record_build("jaeger", "1.76.0", 3, 1.0)  # a warm-cache build says nothing about a cold one
    assert build._expected_packages("jaeger", "1.76.0") == 1234


def test_only_unknown_components_fail_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="known Go components"):
        build.build_missing(["nonsense"], progress=lambda s: None)


def test_cli_only_takes_a_comma_list() -> None:
    from meshbed.cli import _provision_names
    assert _provision_names("consul,toxiproxy") == ["consul", "toxiproxy"]
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="unknown component foo"):
        _provision_names("consul,foo")
