"""A session-wide tiny SAM 3 folder (the layout `vrshq tiny-models` writes as sam3/), offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the tiny model is built locally; nothing may reach the Hub (nor try its cv-utils kernel)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    """<dir> with <dir>/sam3/ holding a tiny random SAM 3 in the release layout."""
    from vrshq.model.sam3_tiny import write_tiny_sam3

    root = tmp_path_factory.mktemp("sam3_models")
    write_tiny_sam3(root / "sam3", seed=0)
    return root
