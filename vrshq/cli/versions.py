"""``vrshq versions``: list the backend's model versions, or choose the one it serves (rollback)."""

from __future__ import annotations

import argparse
import json


from vrshq.cli.folders import add_data_dir_option, data_folder
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser("versions", help="list or switch the backend's model versions",
                       description="Model versions registered under the backend's data folder (MODEL_DIR), in versions/ (by `vrshq "
                       "finetune --register` or Label Studio's Train button). `use VERSION` makes "
                       "running backends serve it without a restart; `use base` goes back to the "
                       "configured model.")
    p.add_argument("action", choices=("list", "use"))
    p.add_argument("version", nargs="?", help="for use: a version id, or base")
    add_data_dir_option(p, old_flag=True)
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from vrshq.versions import VersionRegistry

    data_dir = data_folder(args)
    if not data_dir:
        raise VrshqError("give --data-dir (the backend's data folder) or set MODEL_DIR")
    registry = VersionRegistry(data_dir)
    if args.action == "use":
        if not args.version:
            raise VrshqError("use needs a VERSION (or base)")
        registry.use(args.version, reason="vrshq versions use")
        print(f"serving {args.version}")
        return 0
    serving = registry.serving()
    rows = [v.to_json(serving=serving is not None and v.id == serving.id) for v in registry.list()]
    if args.json:
        print(json.dumps({"serving": serving.id if serving else "base", "versions": rows}, indent=2))
        return 0
    print(f"{'*' if serving is None else ' '} base (the configured model)")
    for r in rows:
        jf = f"J&F {r['J&F']:.3f}" if isinstance(r["J&F"], (int, float)) else "J&F -"
        print(f"{'*' if r['serving'] else ' '} {r['id']}  {jf}  steps {r['steps']}  {r['created'] or ''}")
    return 0
