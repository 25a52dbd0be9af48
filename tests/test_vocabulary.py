"""One name per concept across the CLI and the environment, old spellings deprecated, and a
`vrshq serve` that cannot start says why in one line.

* the data folder: ``--data-dir`` / ``$MODEL_DIR`` in every command that reads it;
* the model folder: ``--model`` / ``$VRSHQ_MODEL`` in every command that loads one;
* ``--model-dir`` and ``$VRSHQ_MODEL_DIR`` keep their old meaning per command for one release,
  with a one-line warning.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess

import pytest

from tests.cli_helpers import VRSHQ, assert_one_line_error, run_cli
from vrshq.backend.corrections import CorrectionsLog
from vrshq.cli import build_parser
from vrshq.cli import folders
from vrshq.cli.folders import data_folder, model_folder
from vrshq.model.tiny import write_tiny_vrshq

MODEL_COMMANDS = ("track", "segment", "demo", "serve", "worker", "studio", "evaluate")
DATA_COMMANDS = ("serve", "worker", "versions", "finetune", "export")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("MODEL_DIR", "VRSHQ_MODEL", "VRSHQ_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    folders._warned.clear()


def _help(*command: str) -> str:
    """The --help text of a (sub)command, from the CLI's own parser."""
    parser = build_parser()
    for name in command:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    return parser.format_help()


def _options(*command: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", _help(*command)))


def test_help_shows_one_name_for_each_folder():
    for command in MODEL_COMMANDS:
        assert "--model" in _options(command), command
    for command in DATA_COMMANDS:
        assert "--data-dir" in _options(command), command
    for command in (*MODEL_COMMANDS, *DATA_COMMANDS, "corrections list", "corrections export",
                    "corrections sync"):
        text = _help(*command.split())
        assert "--model-dir" not in text and "VRSHQ_MODEL_DIR" not in text, command


def test_worker_takes_the_model_options_of_serve():
    shared = {"--plugin", "--model", "--data-dir", "--device", "--precision"}
    assert shared <= _options("serve")
    assert shared <= _options("worker")


def test_model_dir_set_as_the_readme_says_is_found_by_corrections(tmp_path, capfd, monkeypatch):
    # The reported case: MODEL_DIR set, `vrshq corrections list` answered "set VRSHQ_MODEL_DIR".
    CorrectionsLog.for_model_dir(tmp_path).close()
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    rc, out, err = run_cli(capfd, "corrections", "list")
    assert (rc, out, err) == (0, "no corrections\n", "")
    monkeypatch.delenv("MODEL_DIR")
    rc, out, err = run_cli(capfd, "corrections", "list", "--data-dir", tmp_path)
    assert (rc, out, err) == (0, "no corrections\n", "")


def _one_warning(err: str, old: str, new: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vrshq: warning:"), err
    assert f"{old} is deprecated, use {new}" in lines[0], lines[0]


def test_the_old_data_folder_spellings_still_work_with_a_warning(tmp_path, capfd, monkeypatch):
    CorrectionsLog.for_model_dir(tmp_path).close()
    rc, out, err = run_cli(capfd, "corrections", "list", "--model-dir", tmp_path)
    assert (rc, out) == (0, "no corrections\n")
    _one_warning(err, "--model-dir", "--data-dir")
    folders._warned.clear()
    monkeypatch.setenv("VRSHQ_MODEL_DIR", str(tmp_path))
    rc, out, err = run_cli(capfd, "corrections", "list")
    assert (rc, out) == (0, "no corrections\n")
    _one_warning(err, "$VRSHQ_MODEL_DIR", "$MODEL_DIR")
    folders._warned.clear()
    rc, out, err = run_cli(capfd, "versions", "list", "--model-dir", tmp_path)
    assert rc == 0 and "base (the configured model)" in out
    _one_warning(err, "--model-dir", "--data-dir")


def test_the_new_name_wins_over_the_old_one_silently(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("VRSHQ_MODEL_DIR", "/old")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    args = build_parser().parse_args(["versions", "list"])
    assert data_folder(args, old_env=True) == str(tmp_path)
    assert capfd.readouterr().err == ""


def test_the_old_model_folder_spellings_still_work_with_a_warning(tmp_path, capfd, monkeypatch):
    parser = build_parser()
    args = parser.parse_args(["track", "v.mp4", "--mask", "m.png", "--frame", "0", "--out", "o",
                              "--model-dir", str(tmp_path)])
    assert model_folder(args, old_env=True) == str(tmp_path)
    _one_warning(capfd.readouterr().err, "--model-dir", "--model")
    folders._warned.clear()
    monkeypatch.setenv("VRSHQ_MODEL_DIR", "/from-env")
    args = parser.parse_args(["track", "v.mp4", "--mask", "m.png", "--frame", "0", "--out", "o"])
    assert model_folder(args, old_env=True) == "/from-env"
    _one_warning(capfd.readouterr().err, "$VRSHQ_MODEL_DIR", "$VRSHQ_MODEL")
    monkeypatch.setenv("VRSHQ_MODEL", "/new")
    assert model_folder(args, old_env=True) == "/new"
    args = parser.parse_args(["demo", "--model-dir", "/old-flag"])
    assert model_folder(args) == "/old-flag"


# --- `vrshq serve` that cannot start: one line, non-zero, no banner ---------------------------

def _serve(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VRSHQ_MODEL", "MODEL_DIR", "VRSHQ_MODEL_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(VRSHQ), "serve", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--port", str(port), "--data-dir", str(tmp_path / "data"), timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, f"--port {port}", "already in use")
    assert "on http://" not in proc.stderr + proc.stdout


def test_serve_whose_model_cannot_load_says_why_in_one_line(tmp_path):
    model = tmp_path / "model"
    write_tiny_vrshq(model)
    shard = sorted((model / "vrshq").glob("pytorch_model*.bin"))[0]
    shard.write_bytes(b"not a checkpoint")  # the folder checks pass; loading fails in the worker
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = _serve("--model", str(model), "--data-dir", str(tmp_path / "data"), "--port", str(port))
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vrshq: error:") and shard.name in lines[0] and "cannot read weights" in lines[0]
    assert "on http://" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr

