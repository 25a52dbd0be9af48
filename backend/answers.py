"""What an answer may say back: bounded echoes of the input, no absolute server paths.

An error names the value that is wrong, but a request may hold a megabyte where a URL belongs:
:func:`shorten` cuts an echoed value to :data:`ECHO_CHARS` characters, and the app cuts a whole
error text to ``max_error_chars``. :func:`redact` turns paths under the backend's folders
(media roots, data folder) into paths relative to them, so an answer never shows where the
server keeps its files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

ECHO_CHARS = 200  # an echoed input value (a URL, a prompt, an id) is cut to this many characters


def shorten(value: Any, limit: int = ECHO_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters with a note of how long it was."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def cap(message: str, limit: int) -> str:
    """A whole answer text cut to ``limit`` characters."""
    if len(message) <= limit:
        return message
    return message[: max(0, limit - 30)] + f"... ({len(message)} characters)"


def _forms(root: str) -> list[str]:
    forms = {os.path.abspath(root), os.path.realpath(root)}
    return sorted((f.rstrip(os.sep) for f in forms if f.rstrip(os.sep)), key=len, reverse=True)


def redact(message: str, roots: Iterable[str]) -> str:
    """``message`` with each path under one of ``roots`` made relative to it (the root itself: ".")."""
    for root in roots:
        if not root:
            continue
        for form in _forms(str(root)):
            message = message.replace(form + os.sep, "").replace(form, ".")
    return message


__all__ = ["ECHO_CHARS", "cap", "redact", "shorten"]
