"""The two folders a command may need, one name each across the CLI, the environment and the README.

* the **model folder** (weights: ``vrshq/``, ``sam2/``, ``clip/``): ``--model``, ``$VRSHQ_MODEL``;
* the backend's **data folder** (corrections log, task states, model versions): ``--data-dir``,
  ``$MODEL_DIR`` (the Label Studio ML backend convention).

The old spellings (``--model-dir`` for either, ``$VRSHQ_MODEL_DIR``) keep their old meaning in the
commands that had them for one release, with a one-line deprecation warning on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

REMOVED_IN = "0.2"
MODEL_ENV = "VRSHQ_MODEL"
DATA_ENV = "MODEL_DIR"
OLD_ENV = "VRSHQ_MODEL_DIR"
_warned: set[str] = set()


def deprecated(old: str, new: str) -> None:
    """Warn once per process that ``old`` is an old spelling of ``new``."""
    if old in _warned:
        return
    _warned.add(old)
    print(f"vrshq: warning: {old} is deprecated, use {new} (the old spelling goes in vrshq "
          f"{REMOVED_IN})", file=sys.stderr)


def add_model_option(parser: argparse.ArgumentParser, what: str = "model folder",
                     old_flag: bool = False) -> None:
    """--model (default $VRSHQ_MODEL); with ``old_flag``, the deprecated --model-dir too."""
    parser.add_argument("--model", default=None, help=f"{what} (default ${MODEL_ENV})")
    if old_flag:
        parser.add_argument("--model-dir", dest="old_model_dir", default=None, help=argparse.SUPPRESS)


def add_data_dir_option(parser: argparse.ArgumentParser, what: str = "the backend's data folder",
                        old_flag: bool = False, fallback: str | None = None) -> None:
    """--data-dir (default $MODEL_DIR, else ``fallback``); with ``old_flag``, the deprecated --model-dir too."""
    otherwise = f", else {fallback}" if fallback else ""
    parser.add_argument("--data-dir", default=None, help=f"{what} (default ${DATA_ENV}{otherwise})")
    if old_flag:
        parser.add_argument("--model-dir", dest="old_data_dir", default=None, help=argparse.SUPPRESS)


def _folder(args: argparse.Namespace, new: tuple[str, str, str], old_attr: str, old_env: bool,
            environ: Mapping[str, str] | None) -> str | None:
    """The flag, else its old spelling (``old_attr``), else the variable, else (``old_env``) the
    old variable; ``new`` is (attribute, flag, variable)."""
    env = os.environ if environ is None else environ
    attr, flag, var = new
    if getattr(args, attr, None):
        return getattr(args, attr)
    if getattr(args, old_attr, None):
        deprecated("--model-dir", flag)
        return getattr(args, old_attr)
    if env.get(var):
        return env[var]
    if old_env and env.get(OLD_ENV):
        deprecated(f"${OLD_ENV}", f"${var}")
        return env[OLD_ENV]
    return None


def model_folder(args: argparse.Namespace, old_env: bool = False,
                 environ: Mapping[str, str] | None = None) -> str | None:
    """The model folder: --model, else the old --model-dir, else $VRSHQ_MODEL (else the old env)."""
    return _folder(args, ("model", "--model", MODEL_ENV), "old_model_dir", old_env, environ)


def data_folder(args: argparse.Namespace, old_env: bool = False,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The data folder: --data-dir, else the old --model-dir, else $MODEL_DIR (else the old env)."""
    return _folder(args, ("data_dir", "--data-dir", DATA_ENV), "old_data_dir", old_env, environ)


__all__ = ["add_data_dir_option", "add_model_option", "data_folder", "deprecated", "model_folder"]
