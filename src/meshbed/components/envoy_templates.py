"""Where the Envoy templates are (a leaf module: it imports only ``meshbed.errors``).

Shared by :mod:`meshbed.components.envoy` (renders the bootstrap) and
:mod:`meshbed.images` (ships the templates into the python image); kept apart
from ``components.envoy`` so that ``images`` need not import a component,
which imports ``runtime``, which imports the docker runtime, which imports
``images``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ComponentError


def templates_dir() -> Path:
    """envoy/ of a source checkout, else the copy shipped inside the wheel."""
    here = Path(__file__).resolve()
    checkout = here.parents[3] / "envoy"
    if (checkout / "bootstrap.yaml.j2").is_file():
        return checkout
    shipped = Path(str(resources.files("meshbed") / "_templates" / "envoy"))
    if (shipped / "bootstrap.yaml.j2").is_file():
        return shipped
    raise ComponentError("Envoy templates not found (envoy/bootstrap.yaml.j2)", hint="reinstall meshbed")
