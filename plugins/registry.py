"""Plugin discovery through the ``vrshq.plugins`` entry-point group, and loading by name.

A third-party package adds a model by declaring, in its pyproject.toml::

    [project.entry-points."vrshq.plugins"]
    mymodel = "my_package.module:MyPlugin"   # a ModelPlugin subclass

and being pip-installed next to the backend. Entry points are read from the installed
distributions on every call, so a package installed while the process runs is seen. The
plugins of this repository are found without theirs too, so a source tree on PYTHONPATH (not
pip-installed, as scripts/gpu_check.sh runs it on a GPU machine) serves them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from vrshq.plugins.base import ModelPlugin, PluginConfig
from vrshq.errors import ModelError, VrshqError

GROUP = "vrshq.plugins"
DEFAULT_PLUGIN = "vrshq"
ENV_VAR = "VRSHQ_PLUGIN"
# This repository's plugins, as pyproject.toml declares them.
BUILTIN = {"vrshq": "vrshq.plugins.vrshq_plugin:VrshqPlugin", "sam2": "vrshq.plugins.sam2_plugin:Sam2Plugin",
           "sam3": "vrshq.plugins.sam3_plugin:Sam3Plugin"}


def available_plugins() -> dict[str, EntryPoint]:
    """The installed plugins by name (the first distribution wins when two declare a name),
    and the built-in ones where no installed distribution declares them."""
    importlib.invalidate_caches()
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    for name, value in BUILTIN.items():
        found.setdefault(name, EntryPoint(name, value, GROUP))
    return dict(sorted(found.items()))


def plugin_name(env: Mapping[str, str] | None = None, configured: str | None = None) -> str:
    """The backend's plugin: ``configured`` if given, else $VRSHQ_PLUGIN, else "vrshq"."""
    if configured:
        return configured
    value = (os.environ if env is None else env).get(ENV_VAR, "").strip()
    return value or DEFAULT_PLUGIN


def plugin_class(name: str) -> type[ModelPlugin]:
    """Import the plugin class of ``name``; ModelError if unknown, unimportable or not a ModelPlugin."""
    plugins = available_plugins()
    if name not in plugins:
        have = ", ".join(plugins) or "none installed"
        raise ModelError(f"unknown model plugin {name!r} (available: {have})")
    ep = plugins[name]
    try:
        cls = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure of third-party code
        raise ModelError(f"model plugin {name!r} ({ep.value}) cannot be imported: "
                         f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, ModelPlugin)):
        raise ModelError(f"model plugin {name!r} ({ep.value}) is not a ModelPlugin subclass")
    return cls


def load_plugin(name: str, config: PluginConfig) -> ModelPlugin:
    """Instantiate the plugin ``name`` and load its models with ``config``."""
    cls = plugin_class(name)
    try:
        plugin = cls()
        plugin.load(config)
    except VrshqError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code: name it in the error
        raise ModelError(f"model plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from None
    return plugin


__all__ = ["DEFAULT_PLUGIN", "ENV_VAR", "GROUP", "available_plugins", "load_plugin",
           "plugin_class", "plugin_name"]
