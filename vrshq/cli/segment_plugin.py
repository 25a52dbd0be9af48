"""``vrshq segment --plugin NAME``: text prompts through a model plugin (sam3: every instance of
each concept), written as ``segment`` writes VRS-HQ's results.

VRS-HQ keeps its own path in :mod:`vrshq.cli.segment` (one object per prompt, with its anchor and
candidates); any other plugin that takes text goes through the plugin API the backend uses, so
the CLI and Label Studio get the same tracks for the same video and prompts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from vrshq.cli.common import open_video_quietly
from vrshq.cli.labelstudio_file import LabelStudioFile, labelstudio_file
from vrshq.cli.out_folder import staged_out_folder
from vrshq.cli.progress import progress_bar, wants_bars
from vrshq.errors import ModelError, PromptError, VrshqError
from vrshq.masks import TrackSet


def concepts_of(prompts: list[str]) -> list[str]:
    """The concepts of the --prompt values: one per line (a value may hold several lines), in order.

    A value with no text at all is refused; blank lines between concepts are skipped.
    """
    concepts: list[str] = []
    for prompt in prompts:
        lines = [line.strip() for line in prompt.splitlines() if line.strip()]
        if not lines:
            raise PromptError(f"--prompt {prompt!r}: a concept must be non-empty text")
        concepts.extend(lines)
    return concepts


def load_text_plugin(args: argparse.Namespace) -> Any:
    """The plugin of --plugin, checked to take text and its model folder checked, then loaded."""
    from vrshq.plugins.base import PluginConfig
    from vrshq.plugins.registry import load_plugin, plugin_class

    cls = plugin_class(args.plugin)  # an unknown name: ModelError listing the plugins
    if "text" not in cls.capabilities:
        raise ModelError(f"--plugin {args.plugin}: it takes no text prompt (it accepts "
                         f"{', '.join(sorted(cls.capabilities)) or 'nothing'}); `vrshq track` "
                         "takes mask prompts")
    if not Path(args.model).is_dir():
        raise ModelError(f"--model {args.model}: folder not found (the model folder, --model or "
                         "VRSHQ_MODEL)")
    cls.check_model(args.model)
    if not wants_bars(args):  # transformers draws its own bar while loading weights
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return load_plugin(args.plugin, PluginConfig(model_dir=str(args.model), device=args.device,
                                                 precision=args.precision))


def run_plugin(args: argparse.Namespace, out: Path) -> int:
    """Segment with ``args.plugin``; every check runs before the model loads."""
    from vrshq.plugins.base import ObjectPrompt

    vrshq_only = [flag for flag, used in (("--direction", args.direction != "both"),
                                          ("--clip-pretrained", args.clip_pretrained is not None))
                  if used]
    if vrshq_only:  # the plugin would silently ignore them
        raise VrshqError(f"{', '.join(vrshq_only)}: VRS-HQ's option(s), not --plugin {args.plugin}'s")
    concepts = concepts_of(args.prompt)
    prompt_ids = list(range(1, len(concepts) + 1))
    ls_file = labelstudio_file(args, prompt_ids, prompts=dict(zip(prompt_ids, concepts)))
    reader = open_video_quietly(args.video, fps=args.fps)
    plugin = load_text_plugin(args)
    prompts = [ObjectPrompt(obj_id=i, text=c, label=ls_file.labels[i]) for i, c in zip(prompt_ids, concepts)]
    bar: list[Any] = []  # made when the first step is reported

    def progress(stage: str, done: int, total: int) -> None:
        if not bar:
            bar.append(progress_bar(args, stage, "frame", total))
        bar[0].update(done - bar[0].n)

    try:
        objects = plugin.predict(reader, prompts, progress=progress)
    finally:
        for b in bar:
            b.close()
    tracks = TrackSet(reader.height, reader.width, num_frames=len(reader), fps=reader.fps,
                      tracks={o.obj_id: o.track for o in objects})
    task = object_file(ls_file, objects, concepts).task(tracks, plugin.version)
    if ls_file.info.prompt_key is not None:  # the task's prompt: its concepts, one per line
        task["data"][ls_file.info.prompt_key] = "\n".join(concepts)
    try:
        with staged_out_folder(out) as staging:
            from vrshq.tracking import write_outputs

            write_outputs(tracks, staging, task)
            (staging / "keyframes.json").write_text(json.dumps(
                {"model_version": plugin.version, "plugin": plugin.name, "concepts": concepts,
                 "objects": [object_json(o) for o in objects]}, indent=1))
    except OSError as exc:
        raise VrshqError(f"--out {out}: cannot write the outputs ({exc.strerror or exc})") from None
    for o in objects:
        print(f"object {o.obj_id} {o.details.get('concept', o.details.get('prompt'))!r} "
              f"({o.label}): keyframe {o.keyframe}")
    print(f"segmented {len(concepts)} concept(s) into {len(objects)} object(s) over "
          f"{len(reader)} frames -> {out}")
    return 0


def object_file(ls_file: LabelStudioFile, objects: list[Any], concepts: list[str]) -> LabelStudioFile:
    """``ls_file`` for the objects found: each one takes the label of the prompt that found it."""
    labels, prompts = {}, {}
    for o in objects:
        source = int(o.details.get("prompt_obj_id", o.obj_id))
        labels[o.obj_id] = o.label or ls_file.labels[source]
        prompts[o.obj_id] = concepts[source - 1]
    return replace(ls_file, labels=labels, prompts=prompts)


def object_json(o: Any) -> dict[str, Any]:
    """One object of keyframes.json: its id, label, keyframe and what the plugin reported."""
    return {"obj_id": o.obj_id, "label": o.label, "keyframe": int(o.keyframe), "score": float(o.score),
            "details": {k: v for k, v in o.details.items() if isinstance(v, (str, int, float, bool))}}


__all__ = ["concepts_of", "load_text_plugin", "run_plugin"]
