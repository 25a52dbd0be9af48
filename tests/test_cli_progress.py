"""Progress bars: every long command has --progress/--no-progress and draws only on a terminal by default.

A bar is tqdm's redrawn "desc:  40%|####      | 2/5" line on stderr. Into a pipe (a log, CI) nothing is drawn unless
--progress asks; on a terminal (a pty here) bars are drawn unless --no-progress; an error is one
line with no bar before it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import VRSHQ, assert_one_line_error, run_cli, run_script
from vrshq.cli import build_parser
from vrshq.cli.progress import progress_bar, wants_bars
from vrshq.masks import write_palette_folder, write_palette_png
from vrshq.synthetic import SyntheticSpec, ground_truth

LONG_COMMANDS = {
    "track": ["track", "v.mp4", "--mask", "m.png", "--frame", "0", "--out", "o"],
    "segment": ["segment", "v.mp4", "--prompt", "a dog", "--out", "o"],
    "finetune": ["finetune", "--data", "d", "--base", "b", "--out", "o"],
    "evaluate": ["evaluate", "--pred", "p", "--gt", "g"],
    "corrections export": ["corrections", "export", "--out", "o"],
    "corrections sync": ["corrections", "sync", "--project", "1"],
    "download": ["download", "d"],
    "studio": ["studio"],
    "demo": ["demo"],
}


def _is_drawn(stderr: str, desc: str) -> bool:
    """Whether ``stderr`` shows tqdm's bar for ``desc`` ("desc:  40%|####      | 2/5 ...")."""
    return re.search(rf"{re.escape(desc)}: +\d+%\|", stderr) is not None


class _Stderr:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("command", sorted(LONG_COMMANDS))
def test_every_long_command_has_progress_and_no_progress(command):
    parser = build_parser()
    argv = LONG_COMMANDS[command]
    assert parser.parse_args(argv).progress is None
    assert parser.parse_args([*argv, "--progress"]).progress is True
    assert parser.parse_args([*argv, "--no-progress"]).progress is False


@pytest.mark.parametrize("tty, chosen, drawn", [
    (False, None, False), (True, None, True), (False, True, True), (True, False, False)])
def test_bars_follow_stderr_unless_chosen(monkeypatch, tty, chosen, drawn):
    monkeypatch.setattr(sys, "stderr", _Stderr(tty))
    args = argparse.Namespace(progress=chosen)
    assert wants_bars(args) is drawn
    with progress_bar(args, "x", "step", 3) as bar:
        assert bar.disable is (not drawn)


# --- evaluate: in a pipe, on a terminal, and before an error ---------------------------------


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> tuple[Path, Path]:
    """Three 5-frame videos as prediction and ground truth (the same label maps)."""
    root = tmp_path_factory.mktemp("progress")
    gt = ground_truth(SyntheticSpec(num_frames=5, width=48, height=32, num_objects=2))
    for name in ("a", "b", "c"):
        for side in ("pred", "gt"):
            write_palette_folder(root / side / name, list(enumerate(gt)))
    return root / "pred", root / "gt"


def _on_a_terminal(*argv: str) -> tuple[int, str]:
    """Run the console script with stderr on a pseudo-terminal: (exit code, what the terminal got)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VRSHQ_MODEL", "MODEL_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    master, slave = pty.openpty()
    # 24 x 100 like a terminal window (a new pty is 0 x 0, and tqdm fits its bar to the width)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([str(VRSHQ), *map(str, argv)], stdout=subprocess.DEVNULL, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_evaluate_draws_no_bar_into_a_pipe_unless_asked(davis):
    pred, gt = davis
    proc = run_script("evaluate", "--pred", pred, "--gt", gt)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = run_script("evaluate", "--pred", pred, "--gt", gt, "--progress")
    assert proc.returncode == 0 and _is_drawn(proc.stderr, "evaluate"), proc.stderr
    assert "3/3" in proc.stderr


def test_evaluate_draws_a_bar_on_a_terminal_by_default(davis):
    pred, gt = davis
    rc, seen = _on_a_terminal("evaluate", "--pred", pred, "--gt", gt)
    assert rc == 0 and _is_drawn(seen, "evaluate") and "3/3" in seen and "\r" in seen, seen
    rc, seen = _on_a_terminal("evaluate", "--pred", pred, "--gt", gt, "--no-progress")
    assert rc == 0 and seen == "", seen


def test_an_evaluate_error_is_one_line_with_no_bar(davis, tmp_path, tiny_models, capfd):
    pred, gt = davis
    missing = tmp_path / "gt"
    write_palette_folder(missing / "zeta", [(f, np.zeros((4, 4), np.uint8)) for f in range(3)])
    proc = run_script("evaluate", "--pred", pred, "--gt", missing, "--progress")
    assert_one_line_error(proc.returncode, proc.stderr, "no predictions", "zeta")
    # --model: the data is checked before the model loads and before any bar
    rc, _, err = run_cli(capfd, "evaluate", "--model", tiny_models, "--data", tmp_path, "--progress")
    assert_one_line_error(rc, err, "meta_expressions.json")


# --- track, download: the same helper, in process ----------------------------------------------


@pytest.fixture(scope="module")
def short_clip(make_video, tmp_path_factory):
    spec = dict(num_frames=6, width=96, height=64, fps=10.0)
    prompt = tmp_path_factory.mktemp("progress_clip") / "p.png"
    write_palette_png(prompt, ground_truth(SyntheticSpec(**spec))[0])
    return make_video("mp4", **spec), prompt


def test_track_bar_only_when_asked(short_clip, tiny_sam2_files, tmp_path, capfd):
    video, prompt = short_clip
    model = tiny_sam2_files[0].parent.parent
    base = ["track", video, "--mask", prompt, "--frame", 0, "--model", model]
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "a")
    assert rc == 0 and err == "", err
    rc, _, err = run_cli(capfd, *base, "--out", tmp_path / "b", "--progress")
    assert rc == 0 and _is_drawn(err, "tracking"), err


@pytest.fixture()
def weights_server():
    """A local HTTP server of a 3 MiB sam2_hiera_large.pt: (URL, bytes)."""
    payload = bytes(range(256)) * (3 * 4096)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sam2_hiera_large.pt", payload
    finally:
        server.shutdown()
        server.server_close()


def test_download_bar_only_when_asked(weights_server, tmp_path, capfd):
    url, payload = weights_server
    rc, _, err = run_cli(capfd, "download", tmp_path / "w", "--only", "sam2", "--sam2-url", url)
    assert rc == 0 and err == "", err
    assert (tmp_path / "w" / "sam2" / "sam2_hiera_large.pt").read_bytes() == payload
    rc, _, err = run_cli(capfd, "download", tmp_path / "w2", "--only", "sam2", "--sam2-url", url,
                         "--progress")
    assert rc == 0 and _is_drawn(err, "sam2_hiera_large.pt"), err
