"""The module pytest's `headroom` entry point named before the plugin moved to headroom.client.pytest_plugin.

Kept so an environment installed before the move (its entry point still names this module) keeps loading the
plugin; pyproject.toml names the new module, so a fresh install never imports this one.
"""

# pytest reads the hooks and the fixture as attributes of the module its entry point names: these imports are them.
from headroom.client.pytest_plugin import _headroom_lease, pytest_addoption, pytest_configure  # noqa: F401
