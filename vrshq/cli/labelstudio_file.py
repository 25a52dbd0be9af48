"""``--ls-config``, ``--ls-video-url``, ``--ls-label``: the Label Studio task ``track`` and ``segment`` write."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vrshq.errors import VrshqError
from vrshq.masks import TrackSet

if TYPE_CHECKING:  # the backend's modules load label-studio-sdk: only when a command runs
    from vrshq.backend.labelstudio.labelconfig import LabelConfigInfo

SHIPPED = ("video_text_prompt", "video_box_prompt", "video_concepts")


def add_labelstudio_options(parser: argparse.ArgumentParser, default_config: str,
                            default_note: str | None = None) -> None:
    """The options of ``labelstudio.json``; ``default_config`` is a shipped config's name.

    ``default_note`` replaces the name in the help when the command picks the default itself
    (``--ls-config`` then stays None until it does).
    """
    group = parser.add_argument_group(
        "labelstudio.json", "OUT/labelstudio.json is one Label Studio task with the tracks as its "
        "prediction; it imports as it is into a project with the label config of --ls-config")
    group.add_argument("--ls-config", default=None if default_note else default_config, metavar="XML",
                       help="the project's label config: an XML file, or a shipped config "
                       f"({', '.join(SHIPPED)}; default {default_note or default_config}); it names the tags, "
                       "the task data keys and the labels")
    group.add_argument("--ls-video-url", metavar="URL",
                       help="the video as Label Studio loads it, e.g. /data/local-files/?d=clips/a.mp4 "
                       "(default: VIDEO as given)")
    group.add_argument("--ls-label", action="append", metavar="LABEL",
                       help="the tracks' label, one of the config's <Labels>: once for every object, "
                       "or once per object in id order (default: the label a prompt names, else "
                       "Object when the config has it, else its first label)")


@dataclass(frozen=True)
class LabelStudioFile:
    """The checked options: the parsed config, the video URL and the labels of the objects."""

    info: LabelConfigInfo
    video_url: str
    labels: dict[int, str]
    prompts: dict[int, str]

    def task(self, tracks: TrackSet, model_version: str) -> dict[str, Any]:
        """The importable task of ``tracks``."""
        from vrshq.backend.labelstudio.task_file import import_task

        return import_task(tracks, self.info, self.video_url, self.labels, model_version,
                           prompts=self.prompts)


def labelstudio_file(args: argparse.Namespace, obj_ids: list[int],
                     prompts: dict[int, str] | None = None) -> LabelStudioFile:
    """The options checked before the long run: the config parses, the labels are in it."""
    from vrshq.backend.labelstudio.labelconfig import LabelConfigError, parse_label_config, shipped_config
    from vrshq.backend.labelstudio.task_file import object_labels

    source = args.ls_config
    try:
        if Path(source).is_file():
            xml = Path(source).read_text(encoding="utf-8")
        elif source in SHIPPED:
            xml = shipped_config(source)
        else:
            raise VrshqError(f"--ls-config {source}: no such file, nor a shipped config "
                             f"({', '.join(SHIPPED)})")
        info = parse_label_config(xml)
    except (OSError, UnicodeDecodeError) as exc:
        raise VrshqError(f"--ls-config {source}: cannot read it ({exc})") from None
    except LabelConfigError as exc:
        raise VrshqError(f"--ls-config {source}: {exc}") from None
    try:
        labels = object_labels(info, obj_ids, args.ls_label or (), prompts)
    except LabelConfigError as exc:
        raise VrshqError(f"--ls-label: {exc}") from None
    return LabelStudioFile(info, args.ls_video_url or str(args.video), labels, dict(prompts or {}))


def sam2_version(args: argparse.Namespace) -> str:
    """The ``model_version`` of a ``track`` prediction, named as the sam2 plugin names its own."""
    from vrshq.cli.folders import model_folder

    checkpoint = args.sam2_checkpoint
    folder = None if args.sam2_config else model_folder(args, old_env=True)
    if folder:
        return f"sam2-{Path(folder).resolve().name}-{Path(checkpoint or 'model.pt').stem}"
    return f"sam2-{Path(checkpoint or 'sam2').stem}"
