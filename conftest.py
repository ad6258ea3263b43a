"""The repo's own conftest: loads the suite fixture modules in fixtures/.

meshbed's core fixtures (settings, mesh_factory, mesh, check) come from the
installed pytest plugin, meshbed.plugin.
"""

pytest_plugins = ["fixtures.chaos"]
