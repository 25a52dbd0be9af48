"""Model versions: the registry, serving a new version without a restart, rollback, the Train button."""

from __future__ import annotations

import time

import pytest

from vrshq.backend.http.app import create_app
from vrshq.versions import VersionError, VersionRegistry
from tests.backend_fixtures import TEXT_XML, make_backend, next_task_id, seed_corrections, text_task
from tests.cli_helpers import run_cli
from vrshq.synthetic import SyntheticSpec


def wait_for(what: str, check, timeout: float = 15.0, every: float = 0.05):
    """``check()``'s first truthy value; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def predict_version(client) -> str:
    r = client.post("/predict", json={"tasks": [text_task(next_task_id())], "project": "1",
                                      "label_config": TEXT_XML})
    assert r.status_code == 200, r.json
    return r.json["results"][0]["model_version"]


def test_registry_registers_lists_switches_and_rolls_back(tiny_models, tmp_path):
    registry = VersionRegistry(tmp_path)
    assert registry.list() == [] and registry.serving() is None
    first = registry.register(tiny_models, {"J&F": 0.4}, name="run a")
    second = registry.register(tiny_models, {"J&F": 0.5}, name="run b")
    assert (first.id, second.id) == ("v001-run-a", "v002-run-b")
    assert (second.path / "vrshq" / "config.json").is_file() and (second.path / "clip").is_dir()
    assert [v.id for v in registry.list()] == [first.id, second.id]
    registry.use(second.id, reason="better")
    assert registry.serving().id == second.id
    registry.use("base")
    assert registry.serving() is None
    assert [h["version"] for h in registry.history()] == [second.id, "base"]
    with pytest.raises(VersionError, match="registered: v001-run-a, v002-run-b"):
        registry.use("v009-nope")
    with pytest.raises(VersionError, match="not a model folder"):
        registry.register(tmp_path / "nothing")


def test_the_backend_serves_a_new_version_without_restart_and_rolls_back(
        tiny_models, media_root, tmp_path, capfd):
    backend = make_backend(tiny_models, media_root, tmp_path / "data")
    try:
        client = create_app(backend=backend).test_client()
        base_version = predict_version(client)
        version = VersionRegistry(tmp_path / "data").register(tiny_models, name="tuned")
        code, _, err = run_cli(capfd, "versions", "use", version.id, "--data-dir", tmp_path / "data")
        assert code == 0, err
        # A model request looks at the registry at most once a second (/health never touches
        # the model): predict until the switch shows, bounded.
        new_version = wait_for("the new version to be served", lambda: (
            lambda v: v if v != base_version else None)(predict_version(client)), every=0.3)
        assert "v001-tuned" in new_version
        assert client.get("/health").json["model_version"] == new_version
        code, out, _ = run_cli(capfd, "versions", "list", "--data-dir", tmp_path / "data")
        assert f"* {version.id}" in out
        code, _, err = run_cli(capfd, "versions", "use", "base", "--data-dir", tmp_path / "data")
        assert code == 0, err
        wait_for("the rollback to the base version",
                 lambda: predict_version(client) == base_version, every=0.3)
        assert client.get("/health").json["model_version"] == base_version
    finally:
        backend.close()


SPECS = [SyntheticSpec(num_frames=12, width=160, height=120, num_objects=2, seed=s) for s in (1, 2, 3)]


@pytest.mark.timeout(900)
def test_the_train_button_fine_tunes_registers_and_serves_the_new_version(tiny_models, tmp_path):
    media, data = tmp_path / "media", tmp_path / "data"
    seed_corrections(data, media, SPECS, name="t")
    backend = make_backend(tiny_models, media, data, train_steps=100, train_lr=1e-3, train_holdout=0.34)
    try:
        client = create_app(backend=backend).test_client()
        before = client.get("/health").json["model_version"]
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert r.status_code == 201, r.json
        job_id = r.json["result"]["job"]
        job = backend.jobs.wait(job_id, timeout=800)
        assert job.state == "done", job.error
        status = client.get(f"/jobs/{job_id}").json
        assert status["kind"] == "train" and status["progress"] == 1.0
        result = status["result"]
        assert result["last_loss"] < result["first_loss"]
        assert result["served"], result
        assert result["J&F"] >= result["baseline J&F"]
        version = VersionRegistry(data).get(result["version"])
        assert version.metrics["J&F"] == result["J&F"] and version.card["steps"] == 100
        assert version.card["evaluation"]["split"] == "valid"  # the model card has its evaluation
        assert version.card["evaluation"]["J&F"] == result["J&F"]
        after = client.get("/health").json["model_version"]
        assert after != before and "fine-tuned" in after
        media_task = {"id": next_task_id(), "project": 1,
                      "data": {"video": "/data/local-files/?d=clips/t0.mp4", "fps": 10, "prompt": "the red disc"}}
        r = client.post("/predict", json={"tasks": [media_task], "project": "1", "label_config": TEXT_XML})
        assert r.status_code == 200 and r.json["results"][0]["model_version"] == after
    finally:
        backend.close()
