"""`vrshq download --model sam3` against a local stand-in of the Hub (never the network).

The stand-in answers as the Hub does for a gated repo: the API listing and ``resolve`` need the
token (401 without a valid one, 403 for an account without access); a small file redirects on
the Hub's own host (``/api/resolve-cache/...``), the weights redirect to another host (the
storage CDN). The storage host records every request's headers: the token must never reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cli_helpers import VRSHQ, assert_one_line_error, run_cli
from tests.sam3_fixtures import tiny_sam3_dir  # noqa: F401 - fixture

GOOD, NO_ACCESS = "hf_good_token", "hf_no_access"
REPO, SHA = "facebook/sam3", "0123abcd"


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a thread, recording (path, Authorization) per request."""

    def __init__(self, handler_factory) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(handler, code: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(code)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def hub(tiny_sam3_dir):  # noqa: F811
    """(hub server, storage server, the files served): the repo is the tiny sam3/ folder plus
    files a download must leave out (Meta's sam3.pt, a picture in a folder)."""
    files = {p.name: p.read_bytes() for p in (tiny_sam3_dir / "sam3").iterdir() if p.is_file()}
    files["sam3.pt"] = b"meta's own checkpoint"
    listing = sorted(files) + ["README.md", "assets/pic.png"]

    def storage_factory(server):
        class Storage(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.seen.append((self.path, self.headers.get("Authorization")))
                _send(self, 200, files[self.path.split("?")[0].rsplit("/", 1)[-1]])

            def log_message(self, *a):
                pass
        return Storage

    storage = _Server(storage_factory)

    def hub_factory(server):
        class Hub(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                auth = self.headers.get("Authorization")
                server.seen.append((self.path, auth))
                if auth not in (f"Bearer {GOOD}", f"Bearer {NO_ACCESS}"):
                    return _send(self, 401, b'{"error": "Invalid credentials"}')
                if auth == f"Bearer {NO_ACCESS}":
                    return _send(self, 403, b'{"error": "Access to model facebook/sam3 is restricted"}')
                if self.path == f"/api/models/{REPO}/revision/main":
                    body = json.dumps({"sha": SHA, "siblings": [{"rfilename": n} for n in listing]})
                    return _send(self, 200, body.encode())
                prefix = f"/{REPO}/resolve/{SHA}/"
                if self.path.startswith(prefix):
                    name = self.path[len(prefix):]
                    if name.endswith(".safetensors"):  # the weights: the storage host's signed URL
                        return _send(self, 302, headers={
                            "Location": f"http://localhost:{storage.port}/blob/{name}?sig=x"})
                    return _send(self, 307, headers={"Location": f"/api/resolve-cache/{SHA}/{name}"})
                if self.path.startswith(f"/api/resolve-cache/{SHA}/"):
                    return _send(self, 200, files[self.path.rsplit("/", 1)[-1]])
                return _send(self, 404)

            def log_message(self, *a):
                pass
        return Hub

    server = _Server(hub_factory)
    yield server, storage, files
    server.close()
    storage.close()


def _download(capfd, tmp_path, hub_server, *extra):
    return run_cli(capfd, "download", tmp_path / "w", "--model", "sam3", "--no-progress",
                   "--hf-endpoint", f"http://127.0.0.1:{hub_server.port}", *extra)


def test_sam3_is_fetched_with_the_token_which_never_leaves_the_hub(capfd, tmp_path, hub, monkeypatch):
    server, storage, files = hub
    monkeypatch.delenv("HF_TOKEN", raising=False)
    rc, out, err = _download(capfd, tmp_path, server, "--hf-token", GOOD)
    assert rc == 0, err
    got = {p.name: p.read_bytes() for p in (tmp_path / "w" / "sam3").iterdir()}
    want = {n: b for n, b in files.items() if n != "sam3.pt"}
    assert got == want  # byte for byte, without sam3.pt, README.md or assets/
    # the hub saw the token on every request, its own redirects included; the storage host never
    assert server.seen and all(auth == f"Bearer {GOOD}" for _, auth in server.seen)
    assert any(p.startswith("/api/resolve-cache/") for p, _ in server.seen)
    assert storage.seen and all(auth is None for _, auth in storage.seen), storage.seen
    # what was downloaded is a sam3 model folder the plugin accepts
    from vrshq.plugins.sam3_plugin import Sam3Plugin

    Sam3Plugin.check_model(str(tmp_path / "w"))


@pytest.mark.parametrize("token, needles", [
    (NO_ACCESS, ("(403)", "accept the licence on http://127.0.0.1:", "/facebook/sam3")),
    ("hf_wrong", ("refused the token (401)", "HF_TOKEN")),
])
def test_a_refused_token_is_one_line_saying_what_to_do(capfd, tmp_path, hub, token, needles):
    server, storage, _ = hub
    rc, _, err = _download(capfd, tmp_path, server, "--hf-token", token)
    assert_one_line_error(rc, err, *needles)
    assert token not in err  # the token is not printed
    assert storage.seen == [] and not list((tmp_path / "w").rglob("*.part"))


def _script(tmp_path, hub_server, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME")}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), **env_extra})
    return subprocess.run([str(VRSHQ), "download", str(tmp_path / "w"), "--model", "sam3", "--no-progress",
                           "--hf-endpoint", f"http://127.0.0.1:{hub_server.port}"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_no_token_anywhere_is_refused_before_any_request(tmp_path, hub):
    server, _, _ = hub
    proc = _script(tmp_path, server, {})
    assert_one_line_error(proc.returncode, proc.stderr, "gated and no Hugging Face token",
                          "accept its licence", "set HF_TOKEN")
    assert server.seen == []


@pytest.mark.parametrize("source", ["env", "token file"])
def test_the_token_comes_from_hf_token_or_the_login_file(tmp_path, hub, source):
    server, _, _ = hub
    extra = {}
    if source == "env":
        extra["HF_TOKEN"] = GOOD
    else:
        (tmp_path / "hf_home").mkdir()
        (tmp_path / "hf_home" / "token").write_text(GOOD + "\n")
    proc = _script(tmp_path, server, extra)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "w" / "sam3" / "config.json").is_file()
    assert all(auth == f"Bearer {GOOD}" for _, auth in server.seen)


def test_only_is_for_the_vrshq_parts(capfd, tmp_path):
    rc, _, err = run_cli(capfd, "download", tmp_path / "w", "--model", "sam3", "--only", "clip")
    assert_one_line_error(rc, err, "--only picks parts of --model vrshq")


def test_the_redirect_handler_keeps_the_token_on_its_origin_only():
    """Unit level: a same-origin redirect keeps it, another host, port or scheme drops it."""
    import urllib.request

    from vrshq.model.hf_gated import _SameOriginAuth, _origin

    handler = _SameOriginAuth(_origin("https://huggingface.co"))
    for target, kept in [("https://huggingface.co/api/resolve-cache/x", True),
                         ("https://cas-bridge.xethub.hf.co/x", False),
                         ("https://huggingface.co:8443/x", False),
                         ("http://huggingface.co/x", False),
                         ("https://huggingface.co.evil.example/x", False)]:
        req = urllib.request.Request("https://huggingface.co/facebook/sam3/resolve/main/x",
                                     headers={"Authorization": "Bearer t"})
        new = handler.redirect_request(req, None, 302, "Found", {}, target)
        assert (new.get_header("Authorization") is not None) == kept, target
