"""The options `vrshq serve` and `vrshq worker` share: one model, one data folder, one device plan."""

from __future__ import annotations

import argparse
import os
from typing import Any

from vrshq.cli.common import add_precision_option
from vrshq.cli.folders import add_data_dir_option, add_model_option
from vrshq.errors import VrshqError


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--plugin, --model, --data-dir, --device, --precision (each defaults to its variable)."""
    parser.add_argument("--plugin", help="model plugin (default $VRSHQ_PLUGIN or vrshq)")
    add_model_option(parser, "model folder of the plugin")
    add_data_dir_option(parser, fallback="./vrshq-data")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default $VRSHQ_DEVICE or auto)")
    add_precision_option(parser, default=None)


def backend_config(args: argparse.Namespace, **overrides: Any) -> Any:
    """The BackendConfig from the environment with the command line's overrides, its model checked.

    An unknown plugin or an incomplete model folder is a one-line error here, before any model
    loads or any server or worker starts.
    """
    from vrshq.backend.config import BackendConfig
    from vrshq.plugins.registry import plugin_class

    config = BackendConfig.from_env(plugin=args.plugin, model_dir=args.model, data_dir=args.data_dir,
                                    device=args.device, precision=args.precision, **overrides)
    plugin = plugin_class(config.plugin)
    if config.model_dir:
        if not os.path.isdir(config.model_dir):
            raise VrshqError(f"model folder {config.model_dir} (--model or VRSHQ_MODEL): not found")
        plugin.check_model(config.model_dir)
    return config


__all__ = ["add_backend_options", "backend_config"]
