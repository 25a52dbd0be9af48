"""``vrshq corrections``: list and export the annotator corrections logged by the backend."""

from __future__ import annotations

import argparse
import json
import os

from vrshq.cli.folders import add_data_dir_option, data_folder
from vrshq.cli.progress import DoneOfTotal, add_progress_option, progress_bar
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand and its actions."""
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

    ex = actions.add_parser(
        "export", help="write the corrections as JSON lines, or as a ReVOS/MeViS or DAVIS data set",
        description="jsonl (default): corrections.jsonl + manifest.json. revos: the layout the "
        "official VRS-HQ loaders read (train/ and valid/, each with JPEGImages/<video>/<frame>.jpg, "
        "meta_expressions.json and mask_dict.json with COCO RLE). davis: JPEGImages/ + "
        "Annotations/<video>/NNNNN.png palette PNGs for evaluation tools. Frames are extracted from "
        "the task videos; frames without a correction take the backend's latest track "
        "(MODEL_DIR/tasks) when there is one.")
    _add_source_options(ex)
    ex.add_argument("--out", required=True, help="output folder (created if missing)")
    ex.add_argument("--format", choices=("jsonl", "revos", "davis"), default="jsonl",
                    help="jsonl (default), revos (training layout) or davis (palette PNGs)")
    ex.add_argument("--holdout", type=_fraction, default=None,
                    help="fraction of the videos held out into valid/ (0 <= F < 1; default 0)")
    ex.add_argument("--seed", type=int, default=None, help="seed of the train/valid split (default 0)")
    ex.add_argument("--frames", choices=("all", "corrected"), default=None,
                    help="export every frame (default) or only frames with a corrected mask")
    ex.add_argument("--media-root", action="append", default=None, metavar="DIR",
                    help="local folder the task videos may be read from (repeatable; default "
                    "$LOCAL_FILES_DOCUMENT_ROOT)")
    ex.add_argument("--label-studio-url", default=None,
                    help="Label Studio URL to download videos from (default $LABEL_STUDIO_URL)")
    ex.add_argument("--api-key", default=None,
                    help="Label Studio API key (default $LABEL_STUDIO_API_KEY)")
    add_progress_option(ex)
    ex.set_defaults(run=run_export)

    sy = actions.add_parser(
        "sync", help="log the corrections of annotations whose webhook never arrived",
        description="Label Studio does not re-send a failed webhook (the backend was down). This "
        "reads the annotations of the project's predicted tasks from Label Studio, compares each "
        "with the prediction it started from, and logs what the log does not have yet (event "
        "SYNC). Safe to run again: it adds nothing the second time.")
    sy.add_argument("--project", required=True, help="the Label Studio project id")
    add_data_dir_option(sy, "the backend's data folder: task states and corrections.sqlite3", old_flag=True)
    sy.add_argument("--db", default=None, help="SQLAlchemy URL of the log, when it is not in the data folder")
    sy.add_argument("--label-studio-url", default=None, help="default $LABEL_STUDIO_URL")
    sy.add_argument("--api-key", default=None, help="default $LABEL_STUDIO_API_KEY")
    add_progress_option(sy)
    sy.set_defaults(run=run_sync)


def _add_source_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    add_data_dir_option(group, "the backend's data folder, holding corrections.sqlite3", old_flag=True)  # type: ignore[arg-type]
    group.add_argument("--db", help="SQLAlchemy URL of the log, e.g. postgresql://host/db")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _open_log(args: argparse.Namespace):
    """The existing log named by --db / --data-dir / $MODEL_DIR; never creates one."""
    from vrshq.backend.corrections import default_url

    if args.db:
        url = args.db
    else:
        data_dir = data_folder(args, old_env=True)
        if not data_dir:
            raise VrshqError("no corrections log: give --data-dir or --db, or set MODEL_DIR")
        url = default_url(data_dir)
    return _open_url(url, create=False)


def _open_url(url: str, create: bool):
    """The log at ``url``, or a one-line error naming what is wrong with it."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from vrshq.backend.corrections import CorrectionsLog, public_url

    try:
        return CorrectionsLog(url, create=create)
    except FileNotFoundError as exc:
        raise VrshqError(str(exc)) from None
    except (ArgumentError, ValueError) as exc:
        raise VrshqError(f"--db: {exc}") from None
    except ModuleNotFoundError as exc:
        hint = (": pip install 'vrshq[postgres]' (psycopg 3, which postgresql:// URLs use)"
                if (exc.name or "").startswith("psycopg") else "")
        raise VrshqError(f"--db: the database driver {exc.name} is not installed{hint}") from None
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


_DATASET_OPTIONS = ("holdout", "seed", "frames", "media_root", "label_studio_url", "api_key")


def run_export(args: argparse.Namespace) -> int:
    """``vrshq corrections export``."""
    from pathlib import Path

    from vrshq.backend.corrections import export_jsonl

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VrshqError(f"--out {out}: exists and is not a folder")
    if args.format != "jsonl":
        return _run_dataset_export(args, out)
    given = [name for name in _DATASET_OPTIONS if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise VrshqError(f"{flag} applies to --format revos or davis, not jsonl")
    with _open_log(args) as log:
        try:
            path = export_jsonl(log, out)
        except OSError as exc:
            raise VrshqError(f"--out {out}: cannot write the export ({exc.strerror or exc})") from None
    count = json.loads((path.parent / "manifest.json").read_text())["count"]
    print(f"exported {count} correction(s) -> {path}")
    return 0


def _run_dataset_export(args: argparse.Namespace, out) -> int:
    """``vrshq corrections export --format revos|davis``."""
    import sys

    from vrshq.backend.corrections.training_export import NothingExportedError, export_training_set
    from vrshq.backend.labelstudio.media import MediaConfig

    roots = tuple(args.media_root or ())
    for root in roots:
        if not os.path.isdir(root):
            raise VrshqError(f"--media-root {root}: not a folder")
    overrides: dict = {}
    if roots:
        overrides["local_roots"] = roots
    if args.label_studio_url is not None:
        overrides["label_studio_url"] = args.label_studio_url or None
    if args.api_key is not None:
        overrides["api_key"] = args.api_key or None
    media = MediaConfig.from_env(**overrides)
    state_root = data_folder(args, old_env=True)
    # the bar appears once the export knows its videos, after the checks that may fail
    with _open_log(args) as log, DoneOfTotal(args, "exporting", "video") as progress:
        try:
            manifest = export_training_set(
                log, out, media, fmt=args.format, holdout=args.holdout or 0.0,
                seed=args.seed or 0, state_root=state_root, progress=progress,
                frames=args.frames or "all")
        except OSError as exc:
            raise VrshqError(f"--out {out}: cannot write the export ({exc.strerror or exc})") from None
        except NothingExportedError as exc:
            raise VrshqError(f"{exc}; pass --media-root DIR, the folder the task videos are in "
                             "(or --label-studio-url and --api-key to download them)") from None
    counts = manifest["counts"]
    for item in manifest["skipped"]:
        print(f"vrshq: warning: skipped {item['video']}: {item['reason']}", file=sys.stderr)
    print(f"exported {counts['videos']} video(s) (train {counts['train']}, valid {counts['valid']}), "
          f"{counts['expressions']} expression(s), {counts['frames']} frame(s), "
          f"{counts['verified_masks']} annotator-verified mask(s) (the only ground truth "
          f"evaluation scores); skipped {len(manifest['skipped'])} -> {out}")
    return 0


def _check_reachable(url: str) -> None:
    """One plain request first: a Label Studio that is down is one line naming the URL tried,
    not a minute of retries (any HTTP answer, even an error, means it is up)."""
    import requests

    try:
        requests.get(url, timeout=10, allow_redirects=False).close()
    except requests.RequestException as exc:
        raise VrshqError(f"cannot reach Label Studio at {url} ({type(exc).__name__}): is it running "
                         "there? Give its URL with --label-studio-url or LABEL_STUDIO_URL") from None


def run_sync(args: argparse.Namespace) -> int:
    """``vrshq corrections sync``."""
    from pathlib import Path

    from vrshq.backend.config import BackendConfig
    from vrshq.backend.corrections import CorrectionsLog
    from vrshq.backend.corrections.sync import sync_project
    from vrshq.backend.labelstudio.writer import LabelStudioError, LabelStudioWriter
    from vrshq.backend.tasks.projects import ProjectRegistry
    from vrshq.backend.tasks.state import TaskStateStore
    from vrshq.backend.tasks.inputs import project_id

    config = BackendConfig.from_env(data_dir=data_folder(args, old_env=True), label_studio_url=args.label_studio_url,
                                    api_key=args.api_key)
    project = project_id(args.project)
    data = Path(config.data_dir)
    states = TaskStateStore(data)
    if not (data / "tasks" / project).is_dir():
        raise VrshqError(f"{data}: the backend has no predicted task of project {project} here "
                         "(give the backend's data folder with --data-dir or MODEL_DIR)")
    url, key = config.label_studio_url, config.api_key
    setup = ProjectRegistry(data).get(project)
    if setup is not None:
        url, key = url or setup.hostname, key or setup.access_token
    writer = LabelStudioWriter(url, key)
    if not writer.configured:
        raise VrshqError("sync reads Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                         "(or --label-studio-url and --api-key)")
    _check_reachable(url)
    log = _open_url(args.db, create=True) if args.db else CorrectionsLog.for_model_dir(data)
    try:
        with log, progress_bar(args, "sync", "task", len(states.tasks(project))) as bar:
            report = sync_project(log, states, writer, project,
                                  progress=lambda done, total: bar.update(done - bar.n))
    except LabelStudioError as exc:
        raise VrshqError(f"Label Studio at {url}: {str(exc).splitlines()[0]}") from None
    print(f"project {project}: {report.tasks} task(s), {report.annotations} annotation(s) read, "
          f"{report.logged} correction(s) logged"
          + (f", {report.without_parent} not started from a backend prediction (not compared)"
             if report.without_parent else ""))
    return 0
