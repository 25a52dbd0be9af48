"""What the project installs and how its parts import each other.

* The wheel puts one package into site-packages, ``vrshq``: the top-level ``backend/`` and
  ``plugins/`` folders install as ``vrshq.backend`` and ``vrshq.plugins`` (a user's own
  ``backend`` or ``plugins`` never collides with ours).
* Imports point one way, CLI -> backend -> plugins -> model library, and no modules import each
  other in a circle (imports inside functions included: hiding one does not break a circle).
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the dotted name it installs as (pyproject's package-dir).
TREES = {"vrshq": "vrshq", "backend": "vrshq.backend", "plugins": "vrshq.plugins"}


def _modules() -> dict[str, Path]:
    """Every module of the three trees by its installed dotted name."""
    found = {}
    for folder, dotted in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([dotted, *parts])] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ours that ``path`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            # `from a.b import c` imports a.b.c when that is a module, else a.b (c is a name in it)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, set(mods)) for name, path in mods.items()}


def _layer(module: str) -> str:
    for prefix, layer in (("vrshq.cli", "cli"), ("vrshq.backend", "backend"), ("vrshq.plugins", "plugins")):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "library"


ALLOWED = {  # who may import whom: one way, down the chain
    "cli": {"cli", "backend", "plugins", "library"},
    "backend": {"backend", "plugins", "library"},
    "plugins": {"plugins", "library"},
    "library": {"library"},
}


def test_the_scan_sees_every_tree():
    graph = _graph()
    assert {"vrshq.backend.http.app", "vrshq.plugins.base", "vrshq.cli.serve",
            "vrshq.engine.session"} <= set(graph)
    # a known edge of each kind, so an empty scan cannot pass the tests below
    assert "vrshq.backend.service" in graph["vrshq.backend.http.app"]
    assert "vrshq.plugins.base" in graph["vrshq.backend.tasks.inputs"]


def test_every_module_imports():
    # A moved name left behind (`from old.place import it`) fails here, not in a user's request.
    failed = []
    for name in sorted(_modules()):
        if name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (every failure is reported)
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)


def test_imports_point_down_the_chain():
    wrong = [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})"
             for m, targets in _graph().items() for t in sorted(targets)
             if _layer(t) not in ALLOWED[_layer(m)]]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_modules_import_each_other_in_a_circle():
    # A package's __init__ re-exporting its own modules is not a circle worth breaking.
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and _modules()[t].name == "__init__.py")}
             for m, ts in _graph().items()}
    assert _cycles(graph) == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files: setuptools' build/ folder in a working tree can
    # hold modules that no longer exist, and the wheel would carry them.
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith("tests/"):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(src)], cwd=src, check=True, timeout=300)
    (found,) = out.glob("vrshq-*.whl")
    return found


def test_the_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"vrshq"}
    # every module of backend/ and plugins/ is in it, under our name
    want = {f"{dotted.replace('.', '/')}/{p.relative_to(ROOT / folder).as_posix()}"
            for folder, dotted in TREES.items() if folder != "vrshq"
            for p in (ROOT / folder).rglob("*.py")}
    assert want <= set(names), sorted(want - set(names))
    assert {f"vrshq/backend/configs/{n}.xml" for n in ("video_text_prompt", "video_box_prompt",
                                                       "video_concepts")} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vrshq.plugins.vrshq_plugin:VrshqPlugin" in text and "= plugins." not in text


def test_the_installed_wheel_has_no_generic_names(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import importlib.util, vrshq.backend.http.app, vrshq.plugins.registry as r\n"
             "print(vrshq.backend.http.app.__file__)\n"
             "print(importlib.util.find_spec('backend'), importlib.util.find_spec('plugins'))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith(str(site / "vrshq" / "backend")), out
    assert out[1] == "None None"
