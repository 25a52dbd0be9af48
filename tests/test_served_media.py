"""Media the backend serves itself (VRSHQ_MEDIA_URL): keyframe images, strips and the overlay of a
task whose video is not a writable local file, at /media/<project>-<task>/<kind>-<hash>.<ext>.

Read back through the Flask app: the bytes are the stored file's, the type is right, a Range
request gets exactly those bytes (206), a new prediction's files replace the old ones (old URL:
404), and nothing but the store's own names is ever served (traversal, symlinks, unknown names:
404 JSON), with or without basic auth on the other routes.
"""

from __future__ import annotations

import io
import os
import re

import av
import numpy as np
import pytest
from PIL import Image

from vrshq.backend.config import BackendConfig, ConfigError
from vrshq.backend.http.app import create_app
from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.served_media import MediaStore
from vrshq.plugins.base import Correction
from tests.backend_fixtures import SPEC, make_backend, next_task_id, text_task
from tests.test_overlay_backend import OVERLAY_XML, FakeLabelStudio

BASE = "https://vrshq.example:9443/ml"
REMOTE = "https://videos.example.com/a.mp4"


@pytest.fixture(scope="module")
def served(tiny_models, media_root, tmp_path_factory):
    """A backend with VRSHQ_MEDIA_URL set, its test client and its fake task data."""
    backend = make_backend(tiny_models, media_root, tmp_path_factory.mktemp("served_data"),
                           media_url=BASE)
    ls = FakeLabelStudio()
    backend.writer = lambda project: ls
    yield backend, create_app(backend=backend).test_client(), ls
    backend.close()


def _predict_remote(backend, client, ls) -> tuple[int, dict]:
    """Predict a local task, then write its media as if its video were remote (REMOTE)."""
    tid = next_task_id()
    task = text_task(tid)
    ls.data[tid] = dict(task["data"])
    r = client.post("/predict", json={"tasks": [task], "project": "1.1700000000",
                                     "label_config": OVERLAY_XML})
    assert r.status_code == 200, r.json
    state = backend.states.load("1", tid)
    state.video = REMOTE
    with backend.open_video("1", tid, task["data"]["video"], SPEC.fps) as video:
        backend.write_keyframes(state, video, parse_label_config(OVERLAY_XML), None)
    return tid, state


def _path(url: str) -> str:
    assert url.startswith(BASE + "/media/"), url
    return url[len(BASE):]


def test_remote_video_media_are_served_with_their_type_and_ranges(served):
    backend, client, ls = served
    tid, state = _predict_remote(backend, client, ls)
    data = ls.data[tid]
    assert re.fullmatch(rf"{re.escape(BASE)}/media/1-{tid}/overlay-[0-9a-f]{{32}}\.mp4", data["overlay"])
    r = client.get(_path(data["overlay"]))
    assert r.status_code == 200 and r.mimetype == "video/mp4", r.data[:200]
    assert r.headers["Accept-Ranges"] == "bytes"
    body = r.data
    on_disk = (backend.media.root / f"1-{tid}" / data["overlay"].rsplit("/", 1)[1]).read_bytes()
    assert body == on_disk
    with av.open(io.BytesIO(body)) as c:  # the overlay itself: every frame of the video
        assert sum(1 for _ in c.decode(video=0)) == SPEC.num_frames
    # A seek's request: exactly the asked bytes, and where they sit in the file.
    r = client.get(_path(data["overlay"]), headers={"Range": "bytes=100-299"})
    assert r.status_code == 206 and r.data == on_disk[100:300]
    assert r.headers["Content-Range"] == f"bytes 100-299/{len(on_disk)}"
    r = client.get(_path(data["overlay"]), headers={"Range": f"bytes={len(on_disk) + 10}-"})
    assert r.status_code == 416
    # The keyframe images and strips: JPEGs of the video's size / one strip per object.
    # (the keyframe pages, then the extra mask pages of issue 14 §2)
    # (and the on-demand page last, its picture rewritten once: not cached as immutable)
    assert len(data["keyframes"]) == len(state.objects) + len(state.pages) + 1
    assert re.fullmatch(rf"{re.escape(BASE)}/media/1-{tid}/demand-[0-9a-f]{{32}}\.jpg", data["keyframes"][-1])
    r = client.get(_path(data["keyframes"][-1]))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache", r.headers
    assert "immutable" in client.get(_path(data["keyframes"][0])).headers["Cache-Control"]
    assert len(data["strips"]) == len(state.objects) and any("/page-obj" in u for u in data["keyframes"])
    for url in data["keyframes"] + data["strips"]:
        r = client.get(_path(url))
        assert r.status_code == 200 and r.mimetype == "image/jpeg", url
        with Image.open(io.BytesIO(r.data)) as im:
            assert im.format == "JPEG"
            if "/keyframe-" in url or "/page-obj" in url or "/demand-" in url:
                assert im.size == (SPEC.width, SPEC.height)


def test_a_new_prediction_replaces_the_served_files(served):
    backend, client, ls = served
    tid, state = _predict_remote(backend, client, ls)
    first = dict(ls.data[tid])
    obj = state.objects[0]
    mask = np.zeros_like(obj.keyframe_mask)
    mask[10:50, 20:70] = True
    # Backend.correct_task's steps, on the local file standing in for the remote video.
    with backend.open_video("1", tid, text_task(tid)["data"]["video"], SPEC.fps) as video:
        state.replace_objects(backend.plugin.correct(video, state.objects,
                                                     [Correction(obj.obj_id, obj.keyframe, mask)]))
        backend.write_overlay(state, video, parse_label_config(OVERLAY_XML))
    second = ls.data[tid]
    assert second["overlay"] != first["overlay"] and second["strips"][0] != first["strips"][0]
    assert client.get(_path(second["overlay"])).status_code == 200
    gone = client.get(_path(first["overlay"]))
    assert gone.status_code == 404 and gone.json == {"status": 404, "error": "no such media file"}
    names = sorted(os.listdir(backend.media.root / f"1-{tid}"))
    assert [n for n in names if n.startswith("overlay-")] == [second["overlay"].rsplit("/", 1)[1]]
    assert [n for n in names if n.startswith("strip-obj1-")] == [second["strips"][0].rsplit("/", 1)[1]]


def test_only_the_stores_own_names_are_served(served, tmp_path):
    backend, client, ls = served
    tid, _ = _predict_remote(backend, client, ls)
    folder = backend.media.root / f"1-{tid}"
    real = ls.data[tid]["overlay"].rsplit("/", 1)[1]
    # A file outside the store, and a link to it in the task's folder under a valid name.
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    link = "overlay-" + "0" * 32 + ".mp4"
    os.symlink(secret, folder / link)
    (backend.media.root / "x-1").symlink_to(folder)  # a linked task folder
    for path in [f"/media/1-{tid}/{link}", f"/media/x-1/{real}",
                 "/media/1-1/overlay-" + "f" * 32 + ".mp4",  # unknown
                 f"/media/1-{tid}/..%2F..%2Fsecret.txt", f"/media/1-{tid}/../../secret.txt",
                 f"/media/..%2F1-{tid}/{real}", "/media/%2e%2e/" + real,
                 f"/media/1-{tid}/{real[:-4]}.txt", f"/media/1-{tid}/{real.upper()}",
                 f"/media/1-{tid}", "/media/", f"/media/1-{tid}/{real}/x"]:
        r = client.get(path)
        assert r.status_code == 404 and r.is_json and r.json["status"] == 404, (path, r.data[:200])
        assert b"not yours" not in r.data
    assert client.get(f"/media/1-{tid}/{real}").status_code == 200  # the real one still is


def test_media_need_no_credentials_but_other_routes_do(served):
    backend, client, ls = served
    tid, _ = _predict_remote(backend, client, ls)
    config = BackendConfig(**{**backend.config.__dict__, "basic_auth_user": "u", "basic_auth_pass": "p"})
    guarded = create_app(config=config, backend=backend).test_client()
    assert guarded.get(_path(ls.data[tid]["overlay"])).status_code == 200
    assert guarded.get("/jobs").status_code == 401


def test_the_media_url_is_checked_and_a_store_refuses_odd_names(tmp_path):
    with pytest.raises(ConfigError, match="VRSHQ_MEDIA_URL must start with http"):
        BackendConfig.from_env({"VRSHQ_MEDIA_URL": "vrshq:9090"})
    assert BackendConfig.from_env({"VRSHQ_MEDIA_URL": "http://h:9090/"}).media_url == "http://h:9090"
    store = MediaStore(tmp_path, "http://h")
    for kind, suffix in [("../x", ".jpg"), ("Overlay", ".mp4"), ("overlay", ".html")]:
        with pytest.raises(ValueError):
            store.put("1", 2, kind, b"x", suffix)
    with pytest.raises(ValueError):
        store.put("../1", 2, "overlay", b"x", ".mp4")
