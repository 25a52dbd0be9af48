"""The shipped label configs parse, and parse_label_config names every missing tag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from vrshq.backend.labelstudio.labelconfig import (
    LabelConfigError,
    LabelConfigInfo,
    TaskDataError,
    parse_label_config,
    split_prompts,
)
from vrshq.errors import VrshqError

CONFIGS = Path(__file__).resolve().parents[1] / "backend" / "configs"
LABELS = ("Person", "Car", "Animal", "Object")

VIDEO = '<Video name="video" value="$video" frameRate="$fps"/>'
BOX = '<VideoRectangle name="box" toName="video"/>'
LABELS_TAG = '<Labels name="labels" toName="video"><Label value="Person"/><Label value="Car"/></Labels>'
IMAGE = '<Image name="keyframes" valueList="$keyframes"/>'
BRUSH = '<BrushLabels name="mask" toName="keyframes"><Label value="Person"/><Label value="Car"/></BrushLabels>'


def _config(*tags: str) -> str:
    return "<View>" + "".join(tags) + "</View>"


@pytest.mark.parametrize("name", ["video_text_prompt.xml", "video_box_prompt.xml", "video_concepts.xml",
                                  "video_text_prompt_overlay.xml"])
def test_shipped_configs_are_valid_label_studio_configs(name: str) -> None:
    xml = (CONFIGS / name).read_text()
    li = LabelInterface(xml)
    li.validate()  # schema, unique names, toName checks: raises on a bad config
    info = parse_label_config(xml)
    assert (info.video_name, info.video_key, info.fps_key, info.fps_value) == ("video", "video", "fps", None)
    assert (info.box_name, info.labels_name, info.labels) == ("box", "labels", LABELS)
    assert (info.keyframes_name, info.keyframes_key, info.mask_name) == ("keyframes", "keyframes", "mask")
    assert info.has_masks and info.mask_labels == LABELS
    assert (info.clicks_name, info.click_labels) == ("clicks", ("Include", "Exclude"))  # the click tool
    values = dict(zip(info.labels, info.predicted_values))
    assert {"man", "woman", "people"} <= set(values["Person"])
    assert {"sedan", "truck", "bicycle"} <= set(values["Car"])
    assert {"dog", "cat", "horse"} <= set(values["Animal"])
    assert values["Object"] == ("*",)  # the fallback label


def test_text_config_has_prompt_parts_box_config_does_not() -> None:
    text = parse_label_config((CONFIGS / "video_text_prompt.xml").read_text())
    assert (text.prompt_name, text.prompt_key) == ("prompt", "prompt")
    box = parse_label_config((CONFIGS / "video_box_prompt.xml").read_text())
    assert (box.prompt_name, box.prompt_key) == (None, None)


def test_concepts_config_needs_no_prompt_and_names_only_video_fps_keyframes():
    """video_concepts.xml (sam3): no prompt tags, so a task with video and fps alone imports into
    Label Studio (it refuses a task that lacks a $key the config names) and its labels are the
    concepts; every label but the fallback has words of its own."""
    xml = (CONFIGS / "video_concepts.xml").read_text()
    info = parse_label_config(xml)
    assert (info.prompt_name, info.prompt_key, info.overlay_key, info.strips_key) == (None, None, None, None)
    assert set(re.findall(r'\$(\w+)', xml)) == {"video", "fps", "keyframes"}
    assert info.prompts({"video": "a.mp4", "fps": 10, "prompt": "the dog"}) == []
    values = dict(zip(info.labels, info.predicted_values))
    assert [lb for lb in info.labels if values[lb] == ("*",)] == ["Object"]
    assert all(values[lb] and "*" not in values[lb] for lb in info.labels if lb != "Object")


def test_the_click_tool_is_optional_and_its_labels_are_checked() -> None:
    """<KeyPointLabels> on the mask pages: absent is fine (no clicks); its labels must each say
    positive or negative by name (Include / Exclude, Positive / Negative, any case)."""
    info = parse_label_config(_config(LABELS_TAG, VIDEO, BOX, BRUSH, IMAGE))
    assert info.has_masks and (info.clicks_name, info.click_labels) == (None, ())
    tag = '<KeyPointLabels name="pts" toName="keyframes"><Label value="positive"/><Label value="EXCLUDE"/></KeyPointLabels>'
    info = parse_label_config(_config(LABELS_TAG, VIDEO, BOX, BRUSH, tag, IMAGE))
    assert (info.clicks_name, info.click_labels) == ("pts", ("positive", "EXCLUDE"))
    bad = '<KeyPointLabels name="pts" toName="keyframes"><Label value="Include"/><Label value="Head"/></KeyPointLabels>'
    with pytest.raises(LabelConfigError, match="must each be Include or Exclude"):
        parse_label_config(_config(LABELS_TAG, VIDEO, BOX, BRUSH, bad, IMAGE))


def test_minimal_config_without_masks() -> None:
    info = parse_label_config(_config(LABELS_TAG, VIDEO, BOX))
    assert not info.has_masks and info.mask_name is None and info.keyframes_key is None
    assert info.keyframes({"keyframes": ["a.jpg"]}) == []


@pytest.mark.parametrize(
    ("tags", "needle"),
    [
        ((LABELS_TAG, BOX, IMAGE, BRUSH), "<Video>"),
        ((LABELS_TAG, VIDEO, IMAGE, BRUSH), "<VideoRectangle> bound to a <Video>"),
        ((VIDEO, BOX, IMAGE, BRUSH), "no <Labels>"),
        ((LABELS_TAG, VIDEO, BOX, '<Image name="keyframes" value="$kf"/>', BRUSH), "valueList"),
        (
            (LABELS_TAG, VIDEO, BOX, IMAGE, '<BrushLabels name="mask" toName="keyframes"><Label value="Person"/></BrushLabels>'),
            "lacks the <Labels> values ['Car']",
        ),
        ((LABELS_TAG, '<Video name="video" value="$video" frameRate="fast"/>', BOX), "frameRate"),
        ((LABELS_TAG, '<Video name="video" value="http://x/v.mp4"/>', BOX), "task data"),
    ],
)
def test_missing_or_wrong_tag_is_named(tags: tuple[str, ...], needle: str) -> None:
    with pytest.raises(LabelConfigError) as err:
        parse_label_config(_config(*tags))
    assert needle in str(err.value)
    assert isinstance(err.value, VrshqError)


def test_videorectangle_on_another_object_does_not_count() -> None:
    xml = _config(LABELS_TAG, VIDEO, IMAGE, '<VideoRectangle name="box" toName="keyframes"/>')
    with pytest.raises(LabelConfigError, match="VideoRectangle"):
        parse_label_config(xml)


def test_broken_xml_is_a_label_config_error() -> None:
    with pytest.raises(LabelConfigError, match="does not parse"):
        parse_label_config("<View><Video name=")


def test_fps_from_task_literal_default_and_inverted() -> None:
    info = parse_label_config(_config(LABELS_TAG, VIDEO, BOX))
    assert info.fps({"fps": 25}) == 25.0
    assert info.fps({"fps": "29.97"}) == pytest.approx(29.97)
    assert info.fps({"fps": 0.5}) == 2.0  # LS inverts rates below 1
    with pytest.raises(TaskDataError, match="'fps'"):
        info.fps({})
    with pytest.raises(TaskDataError, match="positive number"):
        info.fps({"fps": "abc"})
    literal = parse_label_config(_config(LABELS_TAG, '<Video name="v" value="$v" frameRate="10"/>',
                                         '<VideoRectangle name="b" toName="v"/>').replace('toName="video"', 'toName="v"'))
    assert (literal.video_name, literal.box_name, literal.fps({})) == ("v", "b", 10.0)
    default = parse_label_config(_config(LABELS_TAG, '<Video name="video" value="$video"/>', BOX))
    assert default.fps({}) == 24.0


def test_task_prompts_keyframes_and_video() -> None:
    info = parse_label_config((CONFIGS / "video_text_prompt.xml").read_text())
    assert info.prompts({"prompt": "the red car\n\n  the dog  "}) == ["the red car", "the dog"]
    assert info.prompts({"prompt": ["a man", "a woman\na child"]}) == ["a man", "a woman", "a child"]
    assert info.prompts({}) == []
    assert info.keyframes({}) == [] and info.keyframes({"keyframes": ["a.jpg", "b.jpg"]}) == ["a.jpg", "b.jpg"]
    with pytest.raises(TaskDataError):
        info.keyframes({"keyframes": "a.jpg"})
    assert info.video({"video": "/data/v.mp4"}) == "/data/v.mp4"
    with pytest.raises(TaskDataError, match="'video'"):
        info.video({})
    with pytest.raises(TaskDataError):
        split_prompts([1, 2])


def test_textarea_prompts_from_context() -> None:
    info = parse_label_config((CONFIGS / "video_text_prompt.xml").read_text())
    context = [
        {"from_name": "prompt", "to_name": "video", "type": "textarea", "value": {"text": ["the cat"]}},
        {"from_name": "box", "to_name": "video", "type": "videorectangle", "value": {"sequence": []}},
    ]
    assert info.textarea_prompts(context) == ["the cat"]
    assert info.textarea_prompts(None) == []


def test_label_for_prompt() -> None:
    info = parse_label_config((CONFIGS / "video_text_prompt.xml").read_text())
    assert info.label_for_prompt("the red car on the left") == "Car"
    assert info.label_for_prompt("two Cars") == "Car"
    assert info.label_for_prompt("a person walking") == "Person"
    # No whole-word match: the config's fallback label (Object, predicted_values="*"); it was
    # the first label (Person) before issue 13 called that a bug.
    assert info.label_for_prompt("the carpet") == "Object"
    assert info.label_for_prompt("the carpet", default="Car") == "Car"
    assert info.label_for_prompt("the dog", default="Car") == "Animal"  # default: only for the fallback
    with pytest.raises(LabelConfigError, match="not in"):
        info.label_for_prompt("x", default="Tree")
    assert isinstance(info, LabelConfigInfo)


def test_the_concepts_config_is_a_shipped_ls_config_by_name():
    """``--ls-config video_concepts`` (track/segment's labelstudio.json) finds the shipped file."""
    import argparse

    from vrshq.cli.labelstudio_file import labelstudio_file

    args = argparse.Namespace(ls_config="video_concepts", ls_label=None, ls_video_url=None, video="a.mp4")
    made = labelstudio_file(args, [1, 2], {1: "the dog", 2: "a red car"})
    assert made.info == parse_label_config((CONFIGS / "video_concepts.xml").read_text())
    assert made.labels == {1: "Animal", 2: "Car"}
