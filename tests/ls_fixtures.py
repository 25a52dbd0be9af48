"""pytest fixtures for a real Label Studio (see backend/labelstudio_local.py): ``label_studio`` and ``ls_api``.

One server per test session (a cold start with its SQLite migrations takes about 30 s on
2 cores). Its doc root (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) is a session tmp dir;
put clips under a subdir of it and add that subdir as a local-files storage.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vrshq.backend.labelstudio.local import LabelStudioAPI, LabelStudioServer


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A started Label Studio 1.23.2 on 127.0.0.1 (stopped at the end of the session)."""
    root = tmp_path_factory.mktemp("label-studio")
    server = LabelStudioServer(doc_root=root / "docs", data_dir=root / "data")
    server.start()
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_api(label_studio: LabelStudioServer) -> LabelStudioAPI:
    """The REST client of the session's Label Studio (legacy ``Token`` auth)."""
    return label_studio.api()
