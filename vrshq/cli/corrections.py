"""``vrshq corrections``: list and export the annotator corrections logged by the backend."""

from __future__ import annotations

import argparse
import json
import os

from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand and its two actions."""
    p = sub.add_parser("corrections", help="list or export the logged annotator corrections",
                       description="The corrections log: every annotation whose masks or boxes "
                       "differ from the model's prediction. By default it is "
                       "MODEL_DIR/corrections.sqlite3; --db names any SQLAlchemy URL instead.")
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))

    ls = actions.add_parser("list", help="print the corrections (oldest first)")
    _add_source_options(ls)
    ls.add_argument("--project", help="only this project id")
    ls.add_argument("--task", help="only this task id")
    ls.add_argument("--since-id", type=int, help="only corrections with a larger id")
    ls.add_argument("--limit", type=_non_negative, help="at most N corrections")
    ls.add_argument("--json", action="store_true", help="one JSON object per line (RLE masks included)")
    ls.set_defaults(run=run_list)

    ex = actions.add_parser("export", help="write corrections.jsonl and manifest.json to a folder")
    _add_source_options(ex)
    ex.add_argument("--out", required=True, help="output folder (created if missing)")
    ex.set_defaults(run=run_export)


def _add_source_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model-dir", default=None,
                       help="folder holding corrections.sqlite3 (default $VRSHQ_MODEL_DIR)")
    group.add_argument("--db", help="SQLAlchemy URL of the log, e.g. postgresql://host/db")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _open_log(args: argparse.Namespace):
    """The existing log named by --db / --model-dir / $VRSHQ_MODEL_DIR; never creates one."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from backend.corrections import CorrectionsLog, default_url, public_url

    if args.db:
        url = args.db
    else:
        model_dir = args.model_dir or os.environ.get("VRSHQ_MODEL_DIR")
        if not model_dir:
            raise VrshqError("no corrections log: give --model-dir or --db, or set VRSHQ_MODEL_DIR")
        url = default_url(model_dir)
    try:
        return CorrectionsLog(url, create=False)
    except FileNotFoundError as exc:
        raise VrshqError(str(exc)) from None
    except (ArgumentError, ValueError) as exc:
        raise VrshqError(f"--db: {exc}") from None
    except ModuleNotFoundError as exc:
        raise VrshqError(f"--db: the database driver is not installed ({exc.name})") from None
    except SQLAlchemyError as exc:
        raise VrshqError(f"cannot open the corrections log {public_url(url)}: "
                         f"{str(exc).splitlines()[0]}") from None


def run_list(args: argparse.Namespace) -> int:
    """``vrshq corrections list``."""
    with _open_log(args) as log:
        try:
            items = log.list(project=args.project, task=args.task, since_id=args.since_id,
                             limit=args.limit)
        except ValueError as exc:
            raise VrshqError(str(exc)) from None
    if args.json:
        for c in items:
            print(json.dumps(c.to_json(), separators=(",", ":"), ensure_ascii=False))
        return 0
    if not items:
        print("no corrections")
        return 0
    header = ("ID", "CREATED (UTC)", "EVENT", "PROJECT", "TASK", "ANNOTATION", "ANNOTATOR",
              "OBJ", "LABEL", "FRAME", "CHANGED", "MODEL")
    rows = [header]
    for c in items:
        changed = "+".join(name for name, pred, corr in (
            ("mask", c.predicted_mask, c.corrected_mask),
            ("boxes", c.predicted_boxes, c.corrected_boxes)) if pred != corr) or "-"
        rows.append((str(c.id), (c.created_at or "")[:19].replace("T", " "), c.event,
                     str(c.project), str(c.task), _s(c.annotation), _s(c.annotator),
                     str(c.obj_id), c.label or "-", str(c.frame), changed,
                     f"{c.plugin}:{c.model_version}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print(f"{len(items)} correction(s)")
    return 0


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def run_export(args: argparse.Namespace) -> int:
    """``vrshq corrections export``."""
    from pathlib import Path

    from backend.corrections import export_jsonl

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    with _open_log(args) as log:
        try:
            path = export_jsonl(log, out)
        except OSError as exc:
            raise VrshqError(f"--out {out}: cannot write the export ({exc.strerror or exc})") from None
    count = json.loads((path.parent / "manifest.json").read_text())["count"]
    print(f"exported {count} correction(s) -> {path}")
    return 0
