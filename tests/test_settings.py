from pathlib import Path

import pytest

from meshbed.errors import ConfigError
from meshbed.settings import Settings


def test_precedence_cli_over_env_over_ini():
    s = Settings.build(cli={"runtime": "docker", "ready_timeout": None}, env={"MESHBED_RUNTIME": "x", "MESHBED_READY_TIMEOUT": "12"},
                       ini={"ready_timeout": "99", "topology": "t.yaml"})
    assert s.runtime == "docker"
    assert s.ready_timeout == 12.0
    assert s.topology == Path("t.yaml")


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="ready_timeout"):
        Settings.build(cli={"ready_timeout": "soon"}, env={})
    with pytest.raises(ConfigError, match="ready_timeout"):
        Settings.build(cli={"ready_timeout": -1}, env={})


def test_runs_dir_default_and_override(tmp_path):
    assert Settings.build(env={}).runs_dir.name == "runs"
    assert Settings.build(cli={"state_dir": str(tmp_path)}, env={}).runs_dir == tmp_path
