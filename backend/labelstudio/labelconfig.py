"""What the backend needs from a project's label config, found with label-studio-sdk's LabelInterface.

Shipped configs: ``backend/configs/video_text_prompt.xml`` (VRS-HQ, text prompts) and
``backend/configs/video_box_prompt.xml`` (the sam2 plugin, box prompts on a track);
``backend/configs/video_text_prompt_overlay.xml`` (text prompts plus the overlay video);
``backend/configs/video_concepts.xml`` (the sam3 plugin: no prompt, the labels are the concepts).

Label Studio OSS (1.23.2) has no brush or mask regions on ``<Video>``: ``BrushLabels`` binds to
``<Image>`` only. So the keyframe mask of each object lives on a multi-image
``<Image valueList="$keyframes">`` (one page per object, checked to show a predicted
``brushlabels`` result with ``item_index`` and to keep it editable with the brush), next to the
``<Video>`` that shows the object's ``VideoRectangle`` track. Both results of an object share one
region id.

Tags the config must have (names are free; the variables name the task data keys)::

    <Video name="video" value="$video" frameRate="$fps"/>      required; frameRate a number or $var
    <VideoRectangle name="box" toName="video"/>                required
    <Labels name="labels" toName="video">...</Labels>          required, at least one <Label>;
                                                               <Label predicted_values="dog,cat">
                                                               lists words that pick it for a
                                                               prompt (backend.label_rules)
    <TextArea name="prompt" toName="video"/>                   optional: extra prompts typed in LS
    <Text name="prompt_text" value="$prompt"/>                 optional: shows the task's prompt
    <Image name="keyframes" valueList="$keyframes"/>           optional, with the next tag:
    <BrushLabels name="mask" toName="keyframes">...            keyframe masks; without both, masks
                                                               are off (tracks only). It must hold
                                                               every <Labels> value.
    <Image name="strips" valueList="$strips"/>                 optional, bound to no control: per
                                                               object, thumbnails of the frames
                                                               most worth checking (backend.
                                                               labelstudio.strips)
    <Video name="overlay" value="$overlay" frameRate="$fps"    optional: the overlay video (every
           sync="video"/>                                      frame's masks drawn in, written by
                                                               the backend); the main <Video> then
                                                               needs sync="overlay" (backend.
                                                               labelstudio.overlay)

Task data contract (keys as in the shipped configs; the config's variables decide them)::

    {
      "video": "/data/local-files/?d=clips/a.mp4",   # URL or path, constant frame rate
      "fps": 25,                                      # the video's real fps (LS can't read it)
      "prompt": "the man in the red shirt\\nthe dog", # text: one object per non-empty line,
                                                      # or a list of texts, one per object
      "keyframes": ["/data/local-files/?d=kf/a_1.jpg", ...],  # one image per object, in
                                                      # item_index order, then the extra mask
                                                      # pages (backend.labelstudio.pages);
                                                      # filled by the backend (write-back);
                                                      # may be absent or [] before
      "keyframe_frames": [12, 40, 3, 77],             # optional: LS frame number (1-based) of
                                                      # each page, same order
      "keyframe_objects": [1, 2, 1, 2],               # optional: the object id of each page
      "overlay": "/data/local-files/?d=clips/vrshq-overlays/1-7/overlay-<hash>.mp4"
                                                      # filled by the backend when the config
                                                      # has the overlay <Video>
    }

Frames follow Label Studio: LS frame N (1-based) is decoded frame N - 1; time = N / fps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from vrshq.backend.answers import shorten
from vrshq.backend.labelstudio.label_rules import choose_label
from vrshq.errors import VrshqError

# Task data key of the optional keyframe frame numbers (1-based LS frames), parallel to the
# keyframes image list.
KEYFRAME_FRAMES_KEY = "keyframe_frames"
# Task data key of the object id shown on each page of the keyframes image list (the keyframe
# pages, then the extra mask pages of backend.labelstudio.pages).
KEYFRAME_OBJECTS_KEY = "keyframe_objects"

# Label Studio's <Video frameRate> default.
LS_DEFAULT_FRAME_RATE = 24.0


class LabelConfigError(VrshqError):
    """A label config that lacks a tag the backend needs, or binds it wrongly."""


class TaskDataError(VrshqError):
    """Task data that does not hold what the label config asks for (video, fps, prompt)."""


@dataclass(frozen=True)
class LabelConfigInfo:
    """Names and variables of the tags the backend reads and writes."""

    video_name: str  # <Video name>, the to_name of the track results
    video_key: str  # task data key of the video ($video -> "video")
    box_name: str  # <VideoRectangle name>, the from_name of the track results
    labels_name: str  # <Labels name> bound to the video
    labels: tuple[str, ...]  # its label values, in config order
    fps_value: float | None = None  # a literal frameRate
    fps_key: str | None = None  # task data key when frameRate="$fps"
    prompt_name: str | None = None  # <TextArea> bound to the video, for extra prompts
    prompt_key: str | None = None  # task data key of the prompt (from <Text value="$prompt">)
    keyframes_name: str | None = None  # <Image valueList> the masks are drawn on
    keyframes_key: str | None = None  # task data key of the keyframe image list
    mask_name: str | None = None  # <BrushLabels name>, the from_name of the mask results
    mask_labels: tuple[str, ...] = ()
    # Each label's <Label predicted_values="dog,cat"> entries, parallel to labels (backend.label_rules).
    predicted_values: tuple[tuple[str, ...], ...] = ()
    # Each label's <Label background> colour ("" when none), parallel to labels: the overlay's colours.
    label_backgrounds: tuple[str, ...] = ()
    overlay_name: str | None = None  # the second <Video>, synced with the main one
    overlay_key: str | None = None  # task data key of the overlay video's URL
    strips_name: str | None = None  # an <Image valueList> no control binds to: thumbnail strips
    strips_key: str | None = None  # task data key of the strip image list
    # <KeyPointLabels> on the mask pages: an annotator's clicks (labelstudio/click_fixes.py).
    clicks_name: str | None = None
    click_labels: tuple[str, ...] = ()  # its label values; each is positive or negative by name

    @property
    def label_colors(self) -> dict[str, str]:
        """Each label's ``background`` colour from the config (labels without one left out)."""
        return {lb: c for lb, c in zip(self.labels, self.label_backgrounds) if c}

    @property
    def has_masks(self) -> bool:
        """Whether the config shows keyframe masks (an Image valueList with BrushLabels)."""
        return self.mask_name is not None and self.keyframes_name is not None

    def fps(self, data: Mapping[str, Any]) -> float:
        """The frame rate Label Studio uses for a task: the config's, or the task's ``$fps``.

        Like Label Studio, a rate below 1 is inverted. Raises :class:`TaskDataError` when the
        config names a task key that the task lacks or holds something that is not a number.
        """
        if self.fps_key is not None:
            raw = data.get(self.fps_key) if isinstance(data, Mapping) else None
            if raw is None:
                raise TaskDataError(f"task data has no {self.fps_key!r} (the video's frame rate, frameRate=\"${self.fps_key}\")")
            rate = _number(raw)
            if rate is None:
                raise TaskDataError(f"task data {self.fps_key!r} must be a positive number, got {shorten(repr(raw), 60)}")
        else:
            rate = self.fps_value if self.fps_value is not None else LS_DEFAULT_FRAME_RATE
        rate = 1.0 / rate if rate < 1 else rate
        if not math.isfinite(rate):
            raise TaskDataError(f"the frame rate {rate!r} (fps) is not a usable number")
        return rate

    def video(self, data: Mapping[str, Any]) -> str:
        """The task's video URL or path; :class:`TaskDataError` when missing."""
        value = data.get(self.video_key) if isinstance(data, Mapping) else None
        if not isinstance(value, str) or not value.strip():
            raise TaskDataError(f"task data has no {self.video_key!r} (the video's URL or path)")
        return value

    def prompts(self, data: Mapping[str, Any]) -> list[str]:
        """The task's prompts, one per object: a text split into non-empty lines, or a list."""
        if self.prompt_key is None or not isinstance(data, Mapping):
            return []
        return split_prompts(data.get(self.prompt_key))

    def keyframes(self, data: Mapping[str, Any]) -> list[str]:
        """The task's keyframe image list (``[]`` when masks are off or none was written yet)."""
        if self.keyframes_key is None or not isinstance(data, Mapping):
            return []
        value = data.get(self.keyframes_key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TaskDataError(f"task data {self.keyframes_key!r} must be a list of image URLs")
        return list(value)

    def textarea_prompts(self, results: Sequence[Mapping[str, Any]] | None) -> list[str]:
        """Prompts typed into the config's TextArea, from results (``context['result']``, an annotation)."""
        if self.prompt_name is None or not results:
            return []
        out: list[str] = []
        for result in results:
            if not isinstance(result, Mapping) or result.get("from_name") != self.prompt_name:
                continue
            value = result.get("value")
            texts = value.get("text") if isinstance(value, Mapping) else None
            out.extend(split_prompts(texts))
        return out

    def label_for_prompt(self, prompt: str, default: str | None = None) -> str:
        """The config label of a prompt by :mod:`vrshq.backend.labelstudio.label_rules` (without the CLIP rule).

        ``default`` (which must be a config label) replaces the config's fallback label.
        """
        choice = choose_label(prompt, self)
        if choice.rule == "fallback" and default is not None:
            self.check_label(default)
            return default
        return choice.label

    def check_label(self, label: str) -> None:
        """Raise :class:`LabelConfigError` when ``label`` is not one of the config's labels."""
        if label not in self.labels:
            raise LabelConfigError(f"label {label!r} is not in <Labels name=\"{self.labels_name}\">: {list(self.labels)}")


def shipped_config(name: str) -> str:
    """A label config shipped in ``backend/configs`` by name ("video_text_prompt", "video_concepts", ...)."""
    from importlib.resources import files

    path = files("vrshq.backend") / "configs" / f"{name}.xml"
    if not path.is_file():
        raise LabelConfigError(f"no shipped label config {name!r}")
    return path.read_text(encoding="utf-8")


def split_prompts(value: Any) -> list[str]:
    """Prompts from a text (one per non-empty line) or a list of texts (each split the same way)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, Sequence):
        out: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise TaskDataError(f"a prompt must be text, got {item!r}")
            out.extend(split_prompts(item))
        return out
    raise TaskDataError(f"a prompt must be text or a list of texts, got {type(value).__name__}")


def parse_label_config(xml: str) -> LabelConfigInfo:
    """Find the backend's tags in a label config; :class:`LabelConfigError` names what is missing."""
    try:
        li = LabelInterface(xml)
    except Exception as exc:  # lxml syntax errors and the SDK's own
        raise LabelConfigError(f"the label config does not parse: {exc}") from exc
    controls = list(li.controls or [])
    objects = {o.name: o for o in (li.objects or [])}

    videos = [o for o in objects.values() if o.tag.lower() == "video"]
    if not videos:
        raise LabelConfigError("the label config has no <Video> (e.g. <Video name=\"video\" value=\"$video\" frameRate=\"$fps\"/>)")
    video_names = {v.name for v in videos}
    boxes = [c for c in controls if c.tag.lower() == "videorectangle" and set(c.to_name) & video_names]
    if not boxes:
        raise LabelConfigError("the label config has no <VideoRectangle> bound to a <Video>")
    box = boxes[0]
    video = objects[next(n for n in box.to_name if n in video_names)]
    video_key = _variable(video.value)
    if video_key is None:
        raise LabelConfigError(f"<Video name=\"{video.name}\"> must take its value from task data (value=\"$video\")")

    fps_value, fps_key = None, None
    rate = (video.attr or {}).get("frameRate")
    if rate is not None:
        fps_key = _variable(rate)
        if fps_key is None:
            fps_value = _number(rate)
            if fps_value is None:
                raise LabelConfigError(f"<Video name=\"{video.name}\"> frameRate must be a positive number or \"$fps\", got {rate!r}")

    labels_controls = [
        c for c in controls if c.tag.lower() == "labels" and video.name in c.to_name and c.labels
    ]
    if not labels_controls:
        raise LabelConfigError(
            f"the label config has no <Labels> with a <Label> bound to <Video name=\"{video.name}\"> "
            "(each track needs its own label)"
        )
    labels_control = labels_controls[0]

    prompt_name = next(
        (c.name for c in controls if c.tag.lower() == "textarea" and video.name in c.to_name), None
    )
    texts = [o for o in objects.values() if o.tag.lower() == "text" and _variable(o.value)]
    prompt_key = _variable(texts[0].value) if texts else None

    keyframes_name = keyframes_key = mask_name = None
    mask_labels: tuple[str, ...] = ()
    brushes = [c for c in controls if c.tag.lower() == "brushlabels"]
    if brushes:
        brush = brushes[0]
        images = [objects[n] for n in brush.to_name if n in objects and objects[n].tag.lower() == "image"]
        if not images:
            raise LabelConfigError(f"<BrushLabels name=\"{brush.name}\"> is not bound to an <Image>")
        image = images[0]
        if not (image.attr or {}).get("valueList"):
            raise LabelConfigError(
                f"<Image name=\"{image.name}\"> under <BrushLabels name=\"{brush.name}\"> needs "
                "valueList=\"$keyframes\" (one keyframe image per object)"
            )
        keyframes_key = _variable(image.value)
        if keyframes_key is None:
            raise LabelConfigError(f"<Image name=\"{image.name}\"> valueList must be a task data variable (\"$keyframes\")")
        missing = [lb for lb in labels_control.labels if lb not in brush.labels]
        if missing:
            raise LabelConfigError(
                f"<BrushLabels name=\"{brush.name}\"> lacks the <Labels> values {missing}: "
                "a keyframe mask carries its track's label"
            )
        keyframes_name, mask_name, mask_labels = image.name, brush.name, tuple(brush.labels)

    clicks_name, click_labels = _clicks(controls, keyframes_name)
    overlay_name, overlay_key = _overlay(video, videos)
    bound = {n for c in controls for n in c.to_name}
    strips = [o for o in objects.values() if o.tag.lower() == "image" and o.name not in bound
              and _variable((o.attr or {}).get("valueList"))]

    return LabelConfigInfo(
        video_name=video.name,
        video_key=video_key,
        box_name=box.name,
        labels_name=labels_control.name,
        labels=tuple(labels_control.labels),
        predicted_values=tuple(_predicted_values(labels_control, lb) for lb in labels_control.labels),
        fps_value=fps_value,
        fps_key=fps_key,
        prompt_name=prompt_name,
        prompt_key=prompt_key,
        keyframes_name=keyframes_name,
        keyframes_key=keyframes_key,
        mask_name=mask_name,
        mask_labels=mask_labels,
        label_backgrounds=tuple(_label_attr(labels_control, lb, "background") for lb in labels_control.labels),
        overlay_name=overlay_name,
        overlay_key=overlay_key,
        strips_name=strips[0].name if strips else None,
        strips_key=_variable(strips[0].attr["valueList"]) if strips else None,
        clicks_name=clicks_name,
        click_labels=click_labels,
    )


# A click's label decides its kind by name (case-insensitive): SAM's 1 (positive) or 0 (negative).
CLICK_KINDS = {"include": 1, "positive": 1, "exclude": 0, "negative": 0}


def _clicks(controls: list[Any], keyframes_name: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The optional <KeyPointLabels> on the mask pages: its name and labels (all of known kind)."""
    tags = [c for c in controls if c.tag.lower() == "keypointlabels" and keyframes_name in c.to_name]
    if not tags or keyframes_name is None:
        return None, ()
    tag = tags[0]
    unknown = [lb for lb in tag.labels if lb.strip().lower() not in CLICK_KINDS]
    if unknown or not tag.labels:
        raise LabelConfigError(f"<KeyPointLabels name=\"{tag.name}\"> labels must each be Include or "
                               f"Exclude (or Positive / Negative), got {list(tag.labels)}")
    return tag.name, tuple(tag.labels)


def _overlay(video: Any, videos: list[Any]) -> tuple[str | None, str | None]:
    """The overlay ``<Video>`` (one whose ``sync`` names the main video): its name and data key.

    Label Studio keeps two videos in step only when each names the other (checked in 1.23.2),
    and both must play at one frame rate, so a half-wired pair is an error, not a silent
    overlay that drifts.
    """
    others = [v for v in videos if v.name != video.name and (v.attr or {}).get("sync") == video.name]
    if not others:
        return None, None
    overlay = others[0]
    key = _variable(overlay.value)
    if key is None:
        raise LabelConfigError(f"<Video name=\"{overlay.name}\"> (the overlay) must take its value "
                               "from task data (value=\"$overlay\")")
    if (video.attr or {}).get("sync") != overlay.name:
        raise LabelConfigError(f"<Video name=\"{video.name}\"> needs sync=\"{overlay.name}\" to stay "
                               f"in step with the overlay <Video name=\"{overlay.name}\">")
    if (overlay.attr or {}).get("frameRate") != (video.attr or {}).get("frameRate"):
        raise LabelConfigError(f"<Video name=\"{overlay.name}\"> (the overlay) needs the main video's "
                               f"frameRate={(video.attr or {}).get('frameRate')!r}")
    return overlay.name, key


def _label_attr(control: Any, label: str, name: str) -> str:
    """A <Label>'s attribute as text, "" when absent."""
    tag = (getattr(control, "labels_attrs", None) or {}).get(label)
    return str((getattr(tag, "attr", None) or {}).get(name) or "").strip()


def _predicted_values(control: Any, label: str) -> tuple[str, ...]:
    """A <Label>'s comma-separated ``predicted_values``, stripped, empty entries dropped."""
    tag = (getattr(control, "labels_attrs", None) or {}).get(label)
    raw = (getattr(tag, "attr", None) or {}).get("predicted_values") or ""
    return tuple(v.strip() for v in str(raw).split(",") if v.strip())


def _variable(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"\$[A-Za-z_][\w.]*", value.strip()):
        return value.strip()[1:]
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float's range
        return None
    return rate if math.isfinite(rate) and rate > 0 else None
