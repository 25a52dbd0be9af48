"""vrshq: text-prompted video object tracks for Label Studio, with VRS-HQ and SAM-2.

The model library is this package; the Label Studio backend and the model plugins install
under it as :mod:`vrshq.backend` and :mod:`vrshq.plugins` (pyproject's package-dir maps the
top-level ``backend/`` and ``plugins/`` folders of the source tree there).
"""

from pathlib import Path as _Path

__version__ = "0.1.0"


def _source_tree_subpackages() -> None:
    # Run from a source tree (an editable install, or PYTHONPATH=<checkout>), backend/ and
    # plugins/ sit beside this folder rather than in it: search the checkout's root too, so
    # vrshq.backend always comes from the same tree as vrshq (never from another checkout's
    # editable install). An installed wheel has them inside and never reaches this.
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "backend" / "__init__.py").is_file() \
            and not (_Path(__file__).parent / "backend").exists():
        __path__.append(str(root))  # noqa: F821 (the package's own __path__)


_source_tree_subpackages()
