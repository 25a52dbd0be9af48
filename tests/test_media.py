"""vrshq.backend.labelstudio.media against a real local HTTP server that imitates Label Studio's media routes."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vrshq.backend.labelstudio.media import (
    MediaConfig,
    MediaError,
    cache_path,
    local_files_path,
    resolve_media,
)
from vrshq.backend.labelstudio.media_download import _fetch_to
from vrshq.errors import VrshqError

TOKEN = "legacy-secret-token-123"
VIDEO = bytes(range(256)) * 40  # 10240 bytes, stands in for an mp4


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _jwt(**claims) -> str:
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"


REFRESH = _jwt(token_type="refresh", user_id=1)
ACCESS = _jwt(token_type="access", user_id=1)


class FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1 whose routes are a dict of handlers."""

    def __init__(self, routes):
        self.routes = routes  # name -> fn(handler, path, query)
        self.hits: Counter[str] = Counter()
        self.auth: dict[str, list[str | None]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _dispatch(self):
                parts = urlsplit(self.path)
                for prefix, fn in server.routes.items():
                    if parts.path.startswith(prefix):
                        server.hits[prefix] += 1
                        server.auth.setdefault(prefix, []).append(self.headers.get("Authorization"))
                        return fn(self, parts.path, parse_qs(parts.query))
                self.send_error(404)

            do_GET = _dispatch
            do_POST = _dispatch

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(h, body: bytes, status=200, length: int | None = None, headers=()):
    h.send_response(status)
    if length is not None:
        h.send_header("Content-Length", str(length))
    for k, v in headers:
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def _needs(h, expected: set[str]) -> bool:
    if h.headers.get("Authorization") in expected:
        return True
    _send(h, b"no", 401, 2)
    return False


@pytest.fixture
def bucket():
    """A second origin, standing in for S3 behind a presigned URL."""

    def obj(h, path, query):
        _send(h, VIDEO, length=len(VIDEO))

    server = FakeServer({"/bucket/": obj})
    yield server
    server.close()


@pytest.fixture
def ls(bucket):
    """A fake Label Studio. Accepts ``Token TOKEN`` or ``Bearer ACCESS``."""
    ok = {f"Token {TOKEN}", f"Bearer {ACCESS}"}
    state = {"presigned": []}

    def upload(h, path, query):
        if _needs(h, ok):
            if path.endswith("/slow.mp4"):
                time.sleep(0.3)
            _send(h, VIDEO, length=len(VIDEO))

    def local_files(h, path, query):
        if _needs(h, ok):
            _send(h, query["d"][0].encode() + VIDEO, length=len(query["d"][0]) + len(VIDEO))

    def presign(h, path, query):
        if _needs(h, ok):
            uri = base64.urlsafe_b64decode(query["fileuri"][0]).decode()
            state["presigned"].append(uri)
            _send(h, b"", 302, 0, [("Location", f"{bucket.url}/bucket/{urlsplit(uri).path.lstrip('/')}")])

    def truncated(h, path, query):
        h.send_response(200)
        h.send_header("Content-Length", str(len(VIDEO)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(VIDEO[:1000])
        h.wfile.flush()
        h.close_connection = True

    def missing(h, path, query):
        _send(h, b"not found", 404, 9)

    def unlimited(h, path, query):  # no Content-Length: the body ends when the connection closes
        h.send_response(200)
        h.end_headers()
        h.wfile.write(VIDEO)
        h.close_connection = True

    def redirect_out(h, path, query):
        _send(h, b"", 302, 0, [("Location", f"{bucket.url}/bucket/x.mp4")])

    def redirect_in(h, path, query):
        _send(h, b"", 302, 0, [("Location", "/data/upload/1/a.mp4")])

    def refresh(h, path, query):
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        if body.get("refresh") == REFRESH:
            data = json.dumps({"access": ACCESS}).encode()
            _send(h, data, 200, len(data), [("Content-Type", "application/json")])
        else:
            _send(h, b"{}", 401, 2)

    server = FakeServer(
        {
            "/data/upload/": upload,
            "/data/local-files": local_files,
            "/tasks/": presign,
            "/truncated/": truncated,
            "/missing/": missing,
            "/unlimited/": unlimited,
            "/redirect-out/": redirect_out,
            "/redirect-in/": redirect_in,
            "/api/token/refresh/": refresh,
        }
    )
    server.state = state
    yield server
    server.close()


@pytest.fixture
def cfg(ls, tmp_path):
    return MediaConfig(label_studio_url=ls.url, api_key=TOKEN, cache_dir=str(tmp_path / "cache"))


def _cache_files(cfg: MediaConfig) -> list[str]:
    d = Path(cfg.cache_dir)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- parsing ---------------------------------------------------------------------------------------


def test_local_files_path():
    assert local_files_path("/data/local-files/?d=clips/a.mp4") == "clips/a.mp4"
    assert local_files_path("http://127.0.0.1:8080/data/local-files/?d=clips%2Fmy%20clip.mp4") == "clips/my clip.mp4"
    assert local_files_path("/data/local-files?d=a%2Bb.mp4") == "a+b.mp4"
    assert local_files_path("/data/upload/1/a.mp4") is None
    assert local_files_path("/data/local-files/?x=1") is None
    assert local_files_path("s3://bucket/data/local-files/?d=a") is None


def test_media_error_is_a_vrshq_error_naming_url_and_reason():
    err = MediaError("upload/1/a.mp4", "HTTP 404 from Label Studio", 404)
    assert isinstance(err, VrshqError)
    assert str(err) == "upload/1/a.mp4: HTTP 404 from Label Studio"
    assert err.status == 404


def test_from_env_reads_the_sdk_variables_and_ignores_root_slash(tmp_path):
    env = {
        "LABEL_STUDIO_HOST": "http://ls:8080",
        "LABEL_STUDIO_ACCESS_TOKEN": "abc",
        "LOCAL_FILES_DOCUMENT_ROOT": "/",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
    }
    config = MediaConfig.from_env(env, cache_dir=str(tmp_path / "c"))
    assert config.label_studio_url == "http://ls:8080"
    assert config.api_key == "abc"
    assert config.local_roots == (str(tmp_path),)
    assert config.cache_dir == str(tmp_path / "c")


# --- local roots --------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.mp4").write_bytes(b"A")
    (root / "clips" / "my clip.mp4").write_bytes(b"S")
    (root / "clips" / "dir.mp4").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"SECRET")
    os.symlink(outside / "secret.mp4", root / "clips" / "link-out.mp4")
    os.symlink(root / "clips" / "a.mp4", root / "clips" / "link-in.mp4")
    os.symlink(outside, root / "outdir")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.mp4").write_bytes(b"B")
    return MediaConfig(local_roots=(str(root), str(other)), cache_dir=str(tmp_path / "cache")), root, outside


def test_local_files_read_from_a_root(roots):
    config, root, _ = roots
    path = resolve_media("/data/local-files/?d=clips/a.mp4", config)
    assert path == (root / "clips" / "a.mp4").resolve()
    assert resolve_media("/data/local-files/?d=clips%2Fmy%20clip.mp4", config).read_bytes() == b"S"
    assert resolve_media("/data/local-files/?d=b.mp4", config).read_bytes() == b"B"  # second root
    assert resolve_media("/data/local-files/?d=clips/link-in.mp4", config).read_bytes() == b"A"


def test_local_files_with_origin_must_match_label_studio(roots):
    config, _, _ = roots
    with_ls = MediaConfig(label_studio_url="http://127.0.0.1:8080", local_roots=config.local_roots)
    assert resolve_media("http://127.0.0.1:8080/data/local-files/?d=clips/a.mp4", with_ls).read_bytes() == b"A"
    with pytest.raises(MediaError, match="only from the Label Studio URL"):
        resolve_media("http://evil.example:8080/data/local-files/?d=clips/a.mp4", with_ls)


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("../outside/secret.mp4", "must not contain '..'"),
        ("clips/../../outside/secret.mp4", "must not contain '..'"),
        ("{outside}/secret.mp4", "must be relative"),
        ("clips/link-out.mp4", "leaves the allowed local roots"),
        ("outdir/secret.mp4", "leaves the allowed local roots"),
        ("clips/nope.mp4", "not found"),
        ("clips/dir.mp4", "not a regular file"),
        ("clips/a.mp4%00.txt", "contains a NUL byte"),
        ("", "must be relative"),
    ],
)
def test_local_files_escapes_are_refused(roots, rel, reason):
    config, _, outside = roots
    rel = rel.replace("{outside}", str(outside))
    with pytest.raises(MediaError, match=reason):
        resolve_media(f"/data/local-files/?d={rel}", config)


def test_plain_paths_only_inside_a_root(roots, tmp_path):
    config, root, outside = roots
    assert resolve_media(str(root / "clips" / "a.mp4"), config).read_bytes() == b"A"
    assert resolve_media("clips/a.mp4", config).read_bytes() == b"A"  # relative to a root
    assert resolve_media(f"file://{root}/clips/a.mp4", config).read_bytes() == b"A"
    for bad in (
        str(outside / "secret.mp4"),
        str(root / "clips" / "link-out.mp4"),
        str(root / ".." / "outside" / "secret.mp4"),
        "../outside/secret.mp4",
        "/etc/passwd",
    ):
        with pytest.raises(MediaError):
            resolve_media(bad, config)
    with pytest.raises(MediaError, match="not a regular file"):
        resolve_media(str(root / "clips" / "dir.mp4"), config)
    with pytest.raises(MediaError, match="only from the Label Studio URL or the allowed local roots"):
        resolve_media(str(root / "clips" / "a.mp4"), MediaConfig(cache_dir=str(tmp_path)))


# --- downloads from Label Studio ---------------------------------------------------------------------


def test_upload_downloads_with_token_and_reuses_the_cache(ls, cfg):
    seen = []
    path = resolve_media("/data/upload/1/a.mp4", cfg, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == VIDEO
    assert path.parent == Path(cfg.cache_dir) and path.name.endswith("__a.mp4")
    assert ls.auth["/data/upload/"] == [f"Token {TOKEN}"]
    assert seen[-1] == (len(VIDEO), len(VIDEO))
    # the same file under the other two spellings: served from the cache
    assert resolve_media("upload/1/a.mp4", cfg) == path
    assert resolve_media(f"{ls.url}/data/upload/1/a.mp4", cfg) == path
    assert ls.hits["/data/upload/"] == 1
    assert _cache_files(cfg) == [path.name, path.name + ".ok"]


def test_cache_without_marker_or_with_wrong_size_is_downloaded_again(ls, cfg):
    path = resolve_media("/data/upload/1/a.mp4", cfg)
    Path(str(path) + ".ok").unlink()
    assert resolve_media("/data/upload/1/a.mp4", cfg).read_bytes() == VIDEO
    assert ls.hits["/data/upload/"] == 2
    path.write_bytes(VIDEO[:10])  # truncated behind our back: the marker's byte count disagrees
    assert resolve_media("/data/upload/1/a.mp4", cfg).read_bytes() == VIDEO
    assert ls.hits["/data/upload/"] == 3


def test_local_files_without_roots_are_downloaded(ls, cfg):
    path = resolve_media("/data/local-files/?d=clips%2Fmy%20clip.mp4", cfg)
    assert path.read_bytes() == b"clips/my clip.mp4" + VIDEO
    assert path.name.endswith("__my_clip.mp4")


def test_bearer_access_jwt_and_refresh_pat(ls, cfg):
    access_cfg = MediaConfig(label_studio_url=ls.url, api_key=ACCESS, cache_dir=cfg.cache_dir)
    resolve_media("/data/upload/1/a.mp4", access_cfg)
    assert ls.auth["/data/upload/"][-1] == f"Bearer {ACCESS}"
    assert ls.hits["/api/token/refresh/"] == 0

    pat_cfg = MediaConfig(label_studio_url=ls.url, api_key=REFRESH, cache_dir=cfg.cache_dir)
    assert resolve_media("/data/upload/2/b.mp4", pat_cfg).read_bytes() == VIDEO
    assert ls.hits["/api/token/refresh/"] == 1
    assert ls.auth["/data/upload/"][-1] == f"Bearer {ACCESS}"

    unknown = _jwt(token_type="refresh", user_id=2)
    bad_pat = MediaConfig(label_studio_url=ls.url, api_key=unknown, cache_dir=cfg.cache_dir)
    with pytest.raises(MediaError, match="refused the personal access token.*HTTP 401") as info:
        resolve_media("/data/upload/3/c.mp4", bad_pat)
    assert "user_id" not in str(info.value) and bad_pat.api_key not in str(info.value)


def test_wrong_token_is_http_401_and_never_shown(ls, cfg, caplog):
    bad = MediaConfig(label_studio_url=ls.url, api_key="wrong-token-xyz", cache_dir=cfg.cache_dir)
    with caplog.at_level("DEBUG"), pytest.raises(MediaError, match="HTTP 401 from Label Studio.*API_KEY") as info:
        resolve_media("/data/upload/1/a.mp4", bad)
    assert info.value.status == 401
    assert "wrong-token-xyz" not in str(info.value) and "wrong-token-xyz" not in caplog.text
    assert _cache_files(cfg) == []


def test_404_and_truncation_and_size_limit_leave_nothing_cached(ls, cfg):
    with pytest.raises(MediaError, match="HTTP 404") as info:
        resolve_media(f"{ls.url}/missing/a.mp4", cfg)
    assert info.value.status == 404
    with pytest.raises(MediaError, match="broke off|truncated"):
        resolve_media(f"{ls.url}/truncated/a.mp4", cfg)
    small = MediaConfig(label_studio_url=ls.url, api_key=TOKEN, cache_dir=cfg.cache_dir, max_bytes=5000)
    with pytest.raises(MediaError, match="over the limit of 5000 bytes"):
        resolve_media("/data/upload/1/a.mp4", small)  # refused from Content-Length
    with pytest.raises(MediaError, match="over the limit of 5000 bytes"):
        resolve_media(f"{ls.url}/unlimited/a.mp4", small)  # refused while streaming
    assert _cache_files(cfg) == []
    # a larger limit lets the same URL through, and only then is it cached
    assert resolve_media(f"{ls.url}/unlimited/a.mp4", cfg).read_bytes() == VIDEO


def test_other_origins_are_refused(ls, bucket, cfg):
    other_host = ls.url.replace("127.0.0.1", "localhost")  # same server, but not the configured origin
    for url in (f"{bucket.url}/bucket/x.mp4", "https://example.com/a.mp4", other_host + "/data/upload/1/a.mp4"):
        with pytest.raises(MediaError, match="only from the Label Studio URL or the allowed local roots"):
            resolve_media(url, cfg)
    with pytest.raises(MediaError, match="refusing a redirect"):
        resolve_media(f"{ls.url}/redirect-out/a.mp4", cfg)
    assert bucket.hits["/bucket/"] == 0
    assert resolve_media(f"{ls.url}/redirect-in/a.mp4", cfg).read_bytes() == VIDEO  # same origin: fine
    with pytest.raises(MediaError, match="unsupported media URL scheme"):
        resolve_media("ftp://127.0.0.1/a.mp4", cfg)


def test_label_studio_url_required(tmp_path):
    config = MediaConfig(cache_dir=str(tmp_path))
    urls = (
        "/data/upload/1/a.mp4",
        "upload/1/a.mp4",
        "/data/local-files/?d=a.mp4",
        "http://127.0.0.1:8080/data/upload/1/a.mp4",
    )
    for url in urls:
        with pytest.raises(MediaError, match="set LABEL_STUDIO_URL"):
            resolve_media(url, config)
    with pytest.raises(MediaError, match="set LABEL_STUDIO_URL"):
        resolve_media("s3://bucket/a.mp4", config, task_id=1)


def test_cloud_uri_via_presign_redirect(ls, bucket, cfg):
    path = resolve_media("s3://my-bucket/videos/c.mp4", cfg, task_id=7)
    assert path.read_bytes() == VIDEO
    assert path.name.endswith("__c.mp4")
    assert ls.state["presigned"] == ["s3://my-bucket/videos/c.mp4"]
    assert ls.auth["/tasks/"] == [f"Token {TOKEN}"]
    assert bucket.auth["/bucket/"] == [None]  # the token never goes to the bucket
    assert resolve_media("s3://my-bucket/videos/c.mp4", cfg, task_id=8) == path  # cached by the uri
    assert bucket.hits["/bucket/"] == 1
    with pytest.raises(MediaError, match="needs the task id"):
        resolve_media("gs://my-bucket/videos/d.mp4", cfg)


# --- concurrency ---------------------------------------------------------------------------------------


def _run_threads(fn, n=4):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results, errors


def test_concurrent_resolve_downloads_once(ls, cfg):
    results, errors = _run_threads(lambda: resolve_media("/data/upload/1/slow.mp4", cfg))
    assert errors == []
    assert len(set(results)) == 1 and results[0].read_bytes() == VIDEO
    assert ls.hits["/data/upload/"] == 1
    assert _cache_files(cfg) == [results[0].name, results[0].name + ".ok"]


def test_concurrent_downloads_without_the_lock_do_not_corrupt(ls, cfg):
    """Several processes fetching the same file: unique temp files and an atomic rename."""
    url = f"{ls.url}/data/upload/1/slow.mp4"
    target = cache_path(url, "slow.mp4", cfg.cache_dir)
    results, errors = _run_threads(lambda: _fetch_to(url, url, target, cfg, cross_origin=False, progress=None))
    assert errors == []
    assert ls.hits["/data/upload/"] == 4
    assert set(results) == {target} and target.read_bytes() == VIDEO
    assert _cache_files(cfg) == [target.name, target.name + ".ok"]
    assert resolve_media(url, cfg) == target and ls.hits["/data/upload/"] == 4
