"""What meshbed ships besides its code, found by name: example topologies, the default profile, the suites.

The wheel carries them inside the package (``meshbed/examples``,
``meshbed/suites``, ``meshbed/profiles``; see ``[tool.hatch...force-include]``
in pyproject.toml); an editable install of a checkout finds the checkout's
own ``examples/`` and ``suites/`` instead. Either way they are addressed by
name: ``-f basic``, ``--suites builtin``, ``extends: default``, so
``meshbed up`` and ``meshbed run`` work from any directory.

A value that names an existing file is always taken as that file; a bare name
(no ``/``, no ``.yaml``) is looked up here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

PKG = Path(__file__).resolve().parent
DEFAULT_TOPOLOGY = "basic"
BUILTIN_SUITES = "builtin"


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install), else None."""
    root = PKG.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "meshbed").is_dir() else None


def _data_dir(name: str, root: Path | None) -> Path | None:
    """``meshbed/<name>`` inside an installed wheel, else ``<root>/<name>`` of a checkout."""
    shipped = PKG / name
    if shipped.is_dir():
        return shipped
    if root is not None and (root / name).is_dir():
        return root / name
    return None


def examples_dir() -> Path | None:
    return _data_dir("examples", checkout_root())


def builtin_suites(root: Path | None = None) -> Path | None:
    """The built-in conformance suites (``--suites builtin``): the wheel's, else those of the checkout ``root``."""
    return _data_dir("suites", root)


def is_name(value: str | Path) -> bool:
    """A bare name (``basic``), not a path (``./basic``, ``basic.yaml``, ``dir/basic``)."""
    s = str(value)
    return bool(s) and "/" not in s and os.sep not in s and not s.endswith((".yaml", ".yml")) and s not in (".", "..")


def topology_names() -> list[str]:
    d = examples_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d else []


def topology(value: str | Path | None = None) -> Path:
    """The topology file for ``-f VALUE`` (None: the default, ``basic``).

    An existing file wins; a bare name is an example topology shipped with
    meshbed; anything else is returned as given, for the loader to report.
    """
    if value is None:
        value = DEFAULT_TOPOLOGY
    p = Path(value)
    if p.is_file() or not is_name(value):
        return p
    d = examples_dir()
    if d is not None and (d / f"{value}.yaml").is_file():
        return d / f"{value}.yaml"
    known = ", ".join(topology_names()) or "(none in this install)"
    raise ConfigError(f"-f {value}: no such file, nor an example topology of that name; examples: {known}",
                      hint="give a path to your topology YAML, or one of the example names")


def profile(value: str | Path | None = None) -> Path:
    """The profile file for ``--profile VALUE`` (None: the packaged default); a bare name is a packaged profile."""
    from .checks import profile as profile_mod
    if value is None:
        return profile_mod.default_path()
    p = Path(value)
    if p.is_file() or not is_name(value):
        return p
    packaged = profile_mod.PACKAGED / f"{value}.yaml"
    if packaged.is_file():
        return packaged
    known = ", ".join(sorted(q.stem for q in profile_mod.PACKAGED.glob("*.yaml")))
    raise ConfigError(f"--profile {value}: no such file, nor a packaged profile of that name; packaged: {known}",
                      hint="give a path to your profile YAML (`extends: default` in it keeps the other thresholds)")


def _given(name: str, cli: Mapping[str, Any] | None, ini: Mapping[str, Any] | None,
           env: Mapping[str, str] | None) -> bool:
    env = os.environ if env is None else env
    return any(v not in (None, "") for v in ((cli or {}).get(name), (ini or {}).get(name),
                                              env.get(f"MESHBED_{name.upper()}")))


def with_defaults(settings: Any, cli: Mapping[str, Any] | None = None, ini: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None) -> Any:
    """``settings`` with the topology and profile resolved: by name, and to the packaged ones when not given.

    ``cli``/``ini``/``env`` are the sources Settings.build merged (to tell a
    value that was given from the built-in default, which names a file of the
    checkout that an install does not have).
    """
    topo = topology(settings.topology if _given("topology", cli, ini, env) else None)
    prof = profile(settings.profile if _given("profile", cli, ini, env) else None)
    return dataclasses.replace(settings, topology=topo, profile=prof)
