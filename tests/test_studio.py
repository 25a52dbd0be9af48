"""``vrshq studio``: the README's main job, run for real (Label Studio + `vrshq serve` + sample project)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.test_serve import free_port

VRSHQ = str(Path(sys.executable).with_name("vrshq"))


def studio(folder: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VRSHQ_MODEL", None)
    return subprocess.run([VRSHQ, "studio", "--dir", str(folder), "--port", str(free_port()),
                           "--backend-port", str(free_port()), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(900)
def test_studio_brings_up_a_pre_annotated_sample_project_and_reuses_it(tmp_path):
    folder = tmp_path / "studio"
    done = studio(folder, "--check")
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    out = done.stdout
    assert "Label Studio: http://127.0.0.1:" in out and "/projects/1/data" in out
    creds = json.loads((folder / "login.json").read_text())
    assert f"login:      {creds['username']}  password: {creds['password']}" in out
    assert "untrained" in out and "2 sample tasks pre-annotated, 4 object tracks" in out
    assert (folder / "models" / "vrshq" / "config.json").is_file()
    # The backend's state and Label Studio's database are kept: a second run finds the project.
    again = studio(folder, "--check")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "/projects/1/data" in again.stdout and "2 sample tasks" in again.stdout
    # Both servers are gone afterwards.
    for line in again.stdout.splitlines():
        if "backend:" in line:
            url = line.split()[1]
            with pytest.raises(requests.ConnectionError):
                requests.get(url + "/health", timeout=2)


def test_studio_with_a_missing_label_studio_is_one_line(tmp_path):
    done = studio(tmp_path / "s", "--label-studio", str(tmp_path / "nope"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("vrshq: error: ")
    assert "nope" in done.stderr and "Traceback" not in done.stderr


def test_label_studio_gets_credentials_that_look_like_options(tmp_path):
    """A generated password may start with "-": it must reach Label Studio as a value."""
    import argparse

    from vrshq.backend.labelstudio.local import LabelStudioServer

    server = LabelStudioServer(doc_root=tmp_path / "docs", data_dir=tmp_path / "data",
                               password="-Xy9", token="-" + "a" * 20)
    command = server.command()[2:]  # after "label-studio start"
    parser = argparse.ArgumentParser()
    for opt in ("--username", "--password", "--user-token"):
        parser.add_argument(opt)
    args, _ = parser.parse_known_args(command)
    assert (args.password, args.user_token, args.username) == ("-Xy9", "-" + "a" * 20, server.username)


@pytest.mark.timeout(600)
def test_studio_stopped_with_sigterm_stops_label_studio_and_the_backend(tmp_path):
    import signal
    import time

    ports = (free_port(), free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VRSHQ_MODEL", None)
    log = tmp_path / "studio.log"
    proc = subprocess.Popen([VRSHQ, "studio", "--dir", str(tmp_path / "s"), "--port", str(ports[0]),
                             "--backend-port", str(ports[1])], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 500
        while "Ctrl-C stops both" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    for port in ports:  # nothing answers any more: both servers went down with it
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
