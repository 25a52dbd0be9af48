"""Model plugins: the interface (:mod:`vrshq.plugins.base`), discovery (:mod:`vrshq.plugins.registry`) and the
built-in ``vrshq`` (text prompts) and ``sam2`` (box, points or mask prompts) plugins.

The built-in plugins are imported lazily by the registry through their entry points, so importing
this package does not import the models.
"""

from vrshq.plugins.base import (
    CORRECTION_KINDS,
    PROMPT_KINDS,
    Correction,
    ModelPlugin,
    ObjectPrompt,
    ObjectTrack,
    PluginConfig,
    Progress,
)
from vrshq.plugins.registry import (
    DEFAULT_PLUGIN,
    GROUP,
    available_plugins,
    load_plugin,
    plugin_class,
    plugin_name,
)

__all__ = [
    "CORRECTION_KINDS", "DEFAULT_PLUGIN", "GROUP", "PROMPT_KINDS", "Correction", "ModelPlugin",
    "ObjectPrompt", "ObjectTrack", "PluginConfig", "Progress", "available_plugins", "load_plugin", "plugin_class",
    "plugin_name",
]
