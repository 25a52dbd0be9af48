"""Which Label Studio a project talks to: /setup's host and token, the environment's, and the
rule that a token only ever goes to the host it came with."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from vrshq.backend.config import BackendConfig
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.media import MediaConfig, same_origin
from vrshq.backend.labelstudio.writer import LabelStudioWriter
from vrshq.backend.tasks.inputs import RequestError, project_id
from vrshq.backend.tasks.projects import ProjectInfo, ProjectRegistry

log = logging.getLogger(__name__)


def public_host(url: str | None) -> str:
    """A Label Studio URL as it may be logged: scheme, host and port only (no credentials)."""
    if not url:
        return "(none)"
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "(not a URL)"


def setup_project(projects: ProjectRegistry, payload: Mapping[str, Any]) -> ProjectInfo:
    """Check and remember a project's label config, URL and token (``/setup``); what is stored."""
    pid = project_id(payload.get("project"))
    schema = payload.get("schema")
    if schema is not None:
        if not isinstance(schema, str):
            raise RequestError("'schema' must be the label config text")
        parse_label_config(schema)
    token = payload.get("access_token")
    hostname = payload.get("hostname")
    extra = payload.get("extra_params") or {}
    if not isinstance(extra, Mapping):
        raise RequestError("'extra_params' must be an object")
    old = projects.get(pid)
    new_host = hostname if isinstance(hostname, str) and hostname else None
    host = new_host or (old.hostname if old else None)
    if isinstance(token, str) and token:
        kept_token = token
    elif old is not None and old.access_token and (
            new_host is None or same_origin(new_host, old.hostname)):
        kept_token = old.access_token
    else:
        # A token belongs to the host it came with: re-pointed elsewhere without a token of
        # its own, the project has none (the old one must never reach the new host).
        kept_token = None
        if old is not None and old.access_token:
            log.warning("project %s: Label Studio moved from %s to %s without a token; the "
                        "stored token is dropped", pid, public_host(old.hostname),
                        public_host(new_host))
    info = ProjectInfo(project=pid, label_config=schema if schema is not None else (old and old.label_config),
                       hostname=host, access_token=kept_token, extra_params=dict(extra))
    projects.put(info)
    log.info("project %s set up: Label Studio at %s (%s)", pid, public_host(host),
             "with a token" if kept_token else "no token")
    return info


def project_writer(config: BackendConfig, projects: ProjectRegistry, project: str) -> LabelStudioWriter:
    """The Label Studio client for a project: the environment's, else /setup's."""
    url, key = config.label_studio_url, config.api_key
    if not (url and key):
        info = projects.get(project)
        if info is not None:
            # /setup's token goes only to /setup's host (a token belongs to its host).
            token = info.access_token if (not url or same_origin(url, info.hostname)) else None
            url, key = url or info.hostname, key or token
    return LabelStudioWriter(url, key)


def project_media(config: BackendConfig, writer: LabelStudioWriter) -> MediaConfig:
    """Where a project's media may come from: its Label Studio, the local roots; the cache folder."""
    return MediaConfig(label_studio_url=writer.url, api_key=writer._api_key,
                       local_roots=tuple(config.local_roots),
                       cache_dir=str(config.data_path / "media"))


__all__ = ["project_media", "project_writer", "public_host", "setup_project"]
