"""Run ``tests/browser/show_task.mjs`` (playwright-core driving Debian's headless Chromium).

``show_task(server, project, task, screenshot)`` logs into Label Studio, opens the task in the
editor, waits for the video, its regions and the keyframe image, takes a full-page screenshot and
returns what the page showed (see the script's header for the keys).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SCRIPT = BROWSER_DIR / "show_task.mjs"
CHROMIUM = "/usr/bin/chromium"
SETUP_HINT = "run `bash scripts/setup_labelstudio.sh` at the repo root"


class BrowserError(RuntimeError):
    """The browser script failed or printed no result."""


def show_task(
    server: Any,
    project: int,
    task: int,
    screenshot: str | os.PathLike[str],
    timeout: float = 120.0,
) -> dict[str, Any]:
    """What the Label Studio editor shows for a task; ``server`` is a started LabelStudioServer."""
    node = shutil.which("node")
    if node is None:
        raise BrowserError(f"node is not installed; {SETUP_HINT}")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        raise BrowserError(f"playwright-core is missing in {BROWSER_DIR}; {SETUP_HINT}")
    if not Path(CHROMIUM).exists():
        raise BrowserError(f"{CHROMIUM} is missing; {SETUP_HINT}")
    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
    args = {
        "url": server.url,
        "email": server.username,
        "password": server.password,
        "project": int(project),
        "task": int(task),
        "screenshot": str(Path(screenshot).resolve()),
        "timeout_ms": int(timeout * 1000),
    }
    try:
        proc = subprocess.run(
            [node, str(SCRIPT), json.dumps(args)],
            cwd=str(BROWSER_DIR),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrowserError(f"{SCRIPT.name} ran past {timeout + 60:.0f} s; stderr:\n{exc.stderr}") from exc
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BrowserError(
            f"{SCRIPT.name} exited with {proc.returncode}; stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1])
