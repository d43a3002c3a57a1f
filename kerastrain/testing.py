"""Test helpers for kerastrain and for plugin authors.

``kerastrain_plugin`` registers a plugin object (a module or class with ``@hookimpl`` methods) for
the duration of one test and unregisters it afterwards, even when the test fails::

    def test_my_source(kerastrain_plugin):
        kerastrain_plugin(MySourcePlugin())
        ...
"""

from __future__ import annotations

import pytest


@pytest.fixture
def kerastrain_plugin():
    from kerastrain.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added = []

    def register(plugin, name: str | None = None):
        from kerastrain.validation import register_checked

        added.append(register_checked(pm, plugin, name=name))  # a misspelt hook: PluginError
        return plugin

    try:
        yield register
    finally:
        for name in added:
            pm.unregister(name=name)
