"""The model a backend process serves: the plugin, loaded from the configured folder or from the
registered version ``versions/serving.json`` names, swapped without a restart when that changes."""

from __future__ import annotations

import logging
import threading
import time

from vrshq.backend.config import BackendConfig
from vrshq.errors import VrshqError
from vrshq.plugins.base import ModelPlugin, PluginConfig
from vrshq.plugins.registry import load_plugin
from vrshq.versions import BASE, Version, VersionRegistry

log = logging.getLogger(__name__)


class ModelServing:
    """The served plugin and the model-version registry it follows; ``lock`` guards model calls."""

    def __init__(self, config: BackendConfig, plugin: ModelPlugin | None = None) -> None:
        self.config = config
        self.versions = VersionRegistry(config.data_path)
        self.serving_id: str | None = None
        self.checked_at = 0.0
        self._reload_lock = threading.Lock()
        self.lock = threading.Lock()
        if plugin is None:
            plugin = self._load(self._serving_version())
        else:
            self.serving_id = BASE  # a given plugin serves the configured model (not reloaded)
        self.plugin = plugin

    def _serving_version(self) -> Version | None:
        try:
            return self.versions.serving()
        except VrshqError as exc:  # a broken registry must not take the backend down
            log.warning("model versions: %s; serving the configured model", exc)
            return None

    def _load(self, version: Version | None) -> ModelPlugin:
        model_dir = str(version.path) if version is not None else self.config.model_dir
        plugin_config = PluginConfig(model_dir=model_dir, device=self.config.device,
                                     precision=self.config.precision)
        plugin = load_plugin(self.config.plugin, plugin_config)
        self.serving_id = version.id if version is not None else BASE
        return plugin

    def model_dir(self) -> str | None:
        """The folder of the model being served (a registered version, or the configured one)."""
        version = self._serving_version() if self.serving_id not in (None, BASE) else None
        return str(version.path) if version is not None else self.config.model_dir

    def refresh(self, min_interval: float = 1.0) -> bool:
        """Swap in the version ``versions/serving.json`` names, if it changed; whether it swapped.

        Checked at most every ``min_interval`` seconds; the new model loads while requests keep
        using the old one, then replaces it under the model lock (no restart, no dropped request).
        """
        now = time.monotonic()
        if now - self.checked_at < min_interval or not self._reload_lock.acquire(blocking=False):
            return False
        try:
            self.checked_at = now
            version = self._serving_version()
            wanted = version.id if version is not None else BASE
            if wanted == self.serving_id:
                return False
            try:
                plugin = self._load(version)
            except VrshqError as exc:
                log.error("model version %s cannot be loaded, keeping %s: %s", wanted,
                          self.serving_id, exc)
                self.serving_id = wanted  # do not retry a broken version on every request
                return False
            with self.lock:
                self.plugin = plugin
            log.info("now serving model version %s (%s)", wanted, plugin.version)
            return True
        finally:
            self._reload_lock.release()


__all__ = ["ModelServing"]
