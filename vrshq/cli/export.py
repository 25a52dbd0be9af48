"""``vrshq export``: a Label Studio project's labeled dataset (final masks + provenance) out."""

from __future__ import annotations

import argparse
import os
from typing import Any

from vrshq.cli.folders import add_data_dir_option, data_folder
from vrshq.errors import VrshqError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    p = sub.add_parser(
        "export", help="export a project's labeled dataset (YouTube-VIS, COCO, DAVIS, Label Studio)",
        description="The final per-frame masks of every task with a submitted annotation (the last "
        "re-propagated track, each correction on its frame), read from the backend's data folder. "
        "Per object and frame the provenance: corrected (an annotator drew it), reviewed (shown "
        "and submitted unchanged) or propagated. youtube-vis: instances.json; coco: "
        "annotations.json (one image per frame); davis: Annotations/<video>/NNNNN.png + "
        "provenance.json; labelstudio: tasks.json. The first three also write "
        "JPEGImages/<video>/NNNNN.jpg from the videos (--no-images: not).")
    p.add_argument("--project", required=True, help="the Label Studio project id")
    p.add_argument("--format", required=True, choices=("youtube-vis", "coco", "davis", "labelstudio"))
    p.add_argument("--out", required=True, help="output folder (replaced if it holds a previous export)")
    add_data_dir_option(p, "the backend's data folder: task states, project setups")
    p.add_argument("--include-unreviewed", action="store_true",
                   help="also export the tasks that have predictions only")
    p.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                   help="write every frame as JPEG next to the masks (default: yes)")
    p.add_argument("--media-root", action="append", default=None, metavar="DIR",
                   help="local folder the task videos may be read from (repeatable; default "
                   "$LOCAL_FILES_DOCUMENT_ROOT)")
    p.add_argument("--label-studio-url", default=None, help="default $LABEL_STUDIO_URL")
    p.add_argument("--api-key", default=None, help="default $LABEL_STUDIO_API_KEY")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: on a terminal)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    from tqdm import tqdm

    from vrshq.backend.config import BackendConfig
    from vrshq.backend.export.run import export_dataset
    from vrshq.backend.labelstudio.media import MediaConfig
    from vrshq.backend.tasks.inputs import RequestError, project_id

    data_dir = data_folder(args)
    if not data_dir:
        raise VrshqError("no data folder: give --data-dir or set MODEL_DIR")
    try:
        project = project_id(args.project)
    except RequestError as exc:
        raise VrshqError(f"--project: {exc}") from None
    roots = tuple(args.media_root or ())
    for root in roots:
        if not os.path.isdir(root):
            raise VrshqError(f"--media-root {root}: not a folder")
    config = BackendConfig.from_env(data_dir=data_dir, label_studio_url=args.label_studio_url,
                                    api_key=args.api_key)
    overrides: dict = {"label_studio_url": config.label_studio_url, "api_key": config.api_key}
    if roots:
        overrides["local_roots"] = roots
    media = MediaConfig.from_env(**overrides)
    info = _label_config(data_dir, project, config) if args.format == "labelstudio" else None
    disable = None if args.progress is None else not args.progress
    with tqdm(desc="export", unit="task", disable=disable) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            bar.set_description(f"export ({stage})")
            bar.total = total
            bar.n = done
            bar.refresh()

        manifest = export_dataset(data_dir, project, args.format, args.out, media,
                                  include_unreviewed=args.include_unreviewed, images=args.images,
                                  label_config=info, progress=progress)
    c = manifest["counts"]
    print(f"exported {c['tasks']} task(s), {c['objects']} object(s); frames: {c['corrected']} "
          f"corrected, {c['reviewed']} reviewed, {c['propagated']} propagated -> {args.out}")
    return 0


def _label_config(data_dir: str, project: str, config: Any) -> Any:
    """The project's label config: from its /setup in the data folder, else from Label Studio."""
    from vrshq.backend.labelstudio.labelconfig import parse_label_config
    from vrshq.backend.labelstudio.writer import LabelStudioWriter
    from vrshq.backend.tasks.projects import ProjectRegistry

    setup = ProjectRegistry(data_dir).get(project)
    if setup is not None and setup.label_config:
        return parse_label_config(setup.label_config)
    url, key = config.label_studio_url, config.api_key
    if setup is not None:
        url, key = url or setup.hostname, key or setup.access_token
    writer = LabelStudioWriter(url, key)
    if not writer.configured:
        raise VrshqError(f"--format labelstudio needs project {project}'s label config: the data "
                         "folder has no /setup of it; set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    return parse_label_config(writer.project_label_config(int(project)))
