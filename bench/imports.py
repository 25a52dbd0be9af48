"""Run a module as ``__main__`` and record which top-level package imported which.

    python -m bench.imports LOG MODULE [ARGS...]

scripts/gpu_check.sh runs every stage through this, so its report can say which installed
distributions the run needed: those reached from our own packages (vrshq, backend, plugins,
bench, tests) through imports, not following what a package of the GPU machine imports for
itself (its own dependencies are the machine's business). At exit one JSON line goes to LOG:
``{"argv": [...], "edges": [[importer, imported], ...]}``, top-level names, first imports only.
Only the standard library is imported here before the hook is in place.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys

_edges: set[tuple[str, str]] = set()
_SKIP = ("importlib", "_frozen_importlib", "<frozen", "bench.imports", "runpy", "pkgutil")


def _importer() -> str:
    """The top-level package of the module whose code is importing, past importlib's frames."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name and not name.startswith(_SKIP):
            return name.split(".")[0]
        frame = frame.f_back
    return "__main__"


class _Recorder:
    """A meta-path finder that finds nothing and notes who asked."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        top = fullname.split(".")[0]
        try:
            importer = _importer()
        except Exception:  # noqa: BLE001 - recording must never break an import
            return None
        if importer != top:
            _edges.add((importer, top))
        return None


def _write(log: str, argv: list[str]) -> None:
    modules = sorted({name.split(".")[0] for name in list(sys.modules)})
    with open(log, "a") as f:
        f.write(json.dumps({"argv": argv, "edges": sorted(_edges), "modules": modules}) + "\n")


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m bench.imports LOG MODULE [ARGS...]")
    log, module, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.meta_path.insert(0, _Recorder())
    atexit.register(_write, log, [module, *args[:1]])
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
