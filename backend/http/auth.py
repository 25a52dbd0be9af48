"""Who may call the backend: basic auth on every route but the open ones, compared in constant time.

Kept free of the service's imports: the server's request reader checks credentials and sizes in
the gunicorn worker before a request reaches the application.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from flask import request

from vrshq.backend.config import BackendConfig

OPEN_ROUTES = ("/health",)
# Read-only media under unguessable names, loaded by Label Studio's page (which cannot send the
# backend's credentials): see vrshq.backend.labelstudio.served_media.
OPEN_PREFIXES = ("/media/",)


def is_open(path: str) -> bool:
    """Whether the route at ``path`` answers without credentials."""
    return path in OPEN_ROUTES or path.startswith(OPEN_PREFIXES)


def size_text(limit: int | None) -> str:
    """A body limit as an answer states it (MiB when whole)."""
    if not limit:
        return "the limit"
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"


def authorized(config: BackendConfig, header: str | None = None) -> bool:
    """Whether the request's (or ``header``'s) basic-auth credentials are the configured ones."""
    if header is None:
        header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), str(config.basic_auth_user).encode())
    ok_pass = hmac.compare_digest(password.encode(), str(config.basic_auth_pass).encode())
    return ok_user and ok_pass


__all__ = ["OPEN_PREFIXES", "OPEN_ROUTES", "authorized", "is_open", "size_text"]
