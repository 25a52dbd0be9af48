"""Issue 13 §4: which label a text prompt gets (backend/label_rules.py), rule by rule, and its meta."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vrshq.backend.config import BackendConfig, ConfigError
from vrshq.backend.jobs.payloads import payload_prompt as _text_prompt, predict_payload
from vrshq.backend.labelstudio.label_rules import (
    CLIP_TEMPLATE,
    ClipRule,
    choose_label,
    choose_labels,
    fallback_label,
    nearest_label,
    plural_forms,
    record_label_rules,
    words,
)
from vrshq.backend.labelstudio.labelconfig import parse_label_config, shipped_config
from vrshq.backend.labelstudio.predictions import object_results
from vrshq.backend.labelstudio.results import state_results
from vrshq.backend.tasks.state import TaskState
from vrshq.backend.tasks.inputs import TaskInputs, read_task, text_prompts
from vrshq.plugins.base import ObjectPrompt, ObjectTrack
from tests.backend_fixtures import BOX_XML, TEXT_XML
from vrshq.masks.track import Track

SHIPPED = parse_label_config(TEXT_XML)


def _config(*labels: str) -> object:
    """A minimal config whose <Labels> holds ``labels`` (each a full <Label .../> tag)."""
    return parse_label_config(
        '<View><Labels name="labels" toName="video">' + "".join(labels) + "</Labels>"
        '<Video name="video" value="$video"/><VideoRectangle name="box" toName="video"/></View>')


def _pick(prompt: str, config: object = SHIPPED, clip: ClipRule | None = None) -> tuple[str, str, str]:
    c = choose_label(prompt, config, clip)
    return c.label, c.rule, c.text


# --- the issue's cases on the shipped config ---------------------------------------------------

@pytest.mark.parametrize("prompt, label, rule, text", [
    ("the dog", "Animal", "predicted_values", "the dog"),
    ("a red sedan", "Car", "predicted_values", "a red sedan"),
    ("the man in red", "Person", "predicted_values", "the man in red"),
    ("Object: the lamp", "Object", "explicit", "the lamp"),
    ("the red disc", "Object", "fallback", "the red disc"),  # matches nothing
])
def test_the_issues_prompts_on_the_shipped_config(prompt, label, rule, text):
    assert _pick(prompt) == (label, rule, text)


def test_the_shipped_configs_carry_the_same_label_words():
    box = parse_label_config(BOX_XML)
    concepts = parse_label_config(shipped_config("video_concepts"))
    for other in (box, concepts):
        assert other.labels == SHIPPED.labels and other.predicted_values == SHIPPED.predicted_values
        assert fallback_label(other) == "Object"
    assert fallback_label(SHIPPED) == "Object"


# --- rule 1: "Label: prompt" ------------------------------------------------------------------

@pytest.mark.parametrize("prompt, expected", [
    ("  animal :  the lamp ", ("Animal", "explicit", "the lamp")),  # case and spaces ignored
    ("Person: the dog", ("Person", "explicit", "the dog")),  # beats the words of the prompt
    ("Car: a: b", ("Car", "explicit", "a: b")),  # only the first colon splits
    ("time: 3 pm", ("Object", "fallback", "time: 3 pm")),  # not a label: the colon stays
    ("the dog: on the left", ("Animal", "predicted_values", "the dog: on the left")),
    ("Unknown: the dog", ("Animal", "predicted_values", "Unknown: the dog")),
    ("Object:", ("Object", "label_name", "Object:")),  # nothing after the colon: not explicit
])
def test_explicit_label_line(prompt, expected):
    assert _pick(prompt) == expected


def test_explicit_prefers_the_exact_case_of_a_label():
    config = _config('<Label value="cat"/>', '<Label value="Cat"/>')
    assert _pick("Cat: the lamp", config)[:2] == ("Cat", "explicit")
    assert _pick("cat: the lamp", config)[:2] == ("cat", "explicit")
    assert _pick("CAT: the lamp", config)[:2] == ("cat", "explicit")  # no exact one: config order


# --- rules 2 and 3: words, plurals, ties --------------------------------------------------------

def test_words_are_lower_cased_runs_of_letters():
    assert words("The dog's T-shirt, 2 cats!") == ["the", "dog", "s", "t", "shirt", "cats"]
    assert _pick("a dog-walker")[:2] == ("Animal", "predicted_values")


@pytest.mark.parametrize("word, plural", [("dog", "dogs"), ("bus", "buses"), ("box", "boxes"),
                                          ("puppy", "puppies"), ("match", "matches"),
                                          ("tomato", "tomatoes")])
def test_simple_plurals(word, plural):
    assert plural in plural_forms(word)


def test_no_plural_beyond_the_simple_rules():
    assert "daies" not in plural_forms("day") and "days" in plural_forms("day")
    assert plural_forms("man") == {"man", "mans"}  # "men" is a value of its own
    assert _pick("two dogs")[:2] == ("Animal", "predicted_values")
    assert _pick("the buses")[:2] == ("Car", "predicted_values")
    assert _pick("three puppies")[:2] == ("Animal", "predicted_values")
    assert _pick("the men")[:2] == ("Person", "predicted_values")  # listed: irregular


def test_earliest_word_wins_then_longer_value_then_config_order():
    assert _pick("the car next to the dog")[0] == "Car"
    assert _pick("the dog next to the car")[0] == "Animal"
    assert _pick("a person riding a horse")[0] == "Person"
    longer = _config('<Label value="Fire" predicted_values="fire"/>',
                     '<Label value="Truck" predicted_values="fire truck, fire trucks"/>')
    assert _pick("the fire truck", longer)[0] == "Truck"  # same word: the longer value
    assert _pick("the fire trucks", longer)[0] == "Truck"
    assert _pick("the fire", longer)[0] == "Fire"
    same = _config('<Label value="Pet" predicted_values="dog"/>',
                   '<Label value="Animal" predicted_values="dog"/>')
    assert _pick("the dog", same)[0] == "Pet"  # same word and length: config order


def test_predicted_values_come_before_label_names():
    config = _config('<Label value="Car"/>', '<Label value="Animal" predicted_values="dog"/>')
    # "car" comes first in the prompt, but rule 2 (predicted_values) is tried before rule 3.
    assert _pick("the car with a dog", config)[:2] == ("Animal", "predicted_values")
    assert _pick("the car", config)[:2] == ("Car", "label_name")


def test_label_names_singular_or_plural():
    config = _config('<Label value="Person"/>', '<Label value="Traffic light"/>')
    assert _pick("two persons", config)[:2] == ("Person", "label_name")
    assert _pick("the traffic lights on the left", config)[:2] == ("Traffic light", "label_name")
    assert _pick("the people", config)[:2] == ("Person", "fallback")  # not a simple plural
    assert _pick("the carpet")[:2] == ("Object", "fallback")  # whole words only


# --- rule 5: the fallback -----------------------------------------------------------------------

def test_fallback_is_the_marked_label_else_object_else_the_first():
    marked = _config('<Label value="Person"/>', '<Label value="Object"/>',
                     '<Label value="Thing" predicted_values="*, thingy"/>')
    assert fallback_label(marked) == "Thing"
    assert _pick("the lamp", marked)[:2] == ("Thing", "fallback")
    assert _pick("the thingy", marked)[:2] == ("Thing", "predicted_values")  # "*" is no word
    named = _config('<Label value="Person"/>', '<Label value="object"/>')
    assert fallback_label(named) == "object"
    plain = _config('<Label value="Person"/>', '<Label value="Car"/>')
    assert fallback_label(plain) == "Person"


# --- rule 4: CLIP (mechanics; the text tower itself in test_label_clip.py) ----------------------

class FakeScores:
    """A scorer that records its calls and answers fixed rows."""

    def __init__(self, rows: list[list[float]] | None) -> None:
        self.rows, self.calls = rows, []

    def __call__(self, texts: list[str], labels: list[str]) -> list[list[float]] | None:
        self.calls.append((texts, labels))
        return self.rows


def test_clip_scores_only_undecided_prompts_in_one_call():
    scores = FakeScores([[0.1, 0.95, 0.2, 0.3], [0.5, 0.6, 0.7, 0.79]])
    got = choose_labels(["the dog", "the red disc", "Car: x", "the blue square"], SHIPPED,
                        ClipRule(scores, threshold=0.8))
    assert [(c.label, c.rule) for c in got] == [("Animal", "predicted_values"), ("Car", "clip"),
                                                 ("Car", "explicit"), ("Object", "fallback")]
    (texts, labels), = scores.calls
    assert texts == ["the red disc", "the blue square"]
    assert labels == [CLIP_TEMPLATE.format(label=lb) for lb in SHIPPED.labels]
    assert labels[0] == "a photo of a Person"


def test_clip_threshold_is_exceeded_not_met_and_ties_go_to_config_order():
    labels = ("A", "B", "C")
    assert nearest_label([0.5, 0.9, 0.9], labels, 0.8) == "B"
    assert nearest_label([0.9, 0.5, 0.9], labels, 0.8) == "A"
    assert nearest_label([0.8, 0.5, 0.1], labels, 0.8) is None  # must exceed
    assert nearest_label([float("nan"), 0.85, 0.1], labels, 0.8) == "B"
    assert nearest_label([0.9, 0.5], labels, 0.8) is None  # a malformed row


def test_clip_unavailable_or_failing_falls_back(caplog):
    assert _pick("the red disc", clip=ClipRule(FakeScores(None)))[:2] == ("Object", "fallback")

    def broken(texts, labels):
        raise RuntimeError("CUDA out of memory")

    with caplog.at_level(logging.WARNING, logger="vrshq.backend.labelstudio.label_rules"):
        assert _pick("the red disc", clip=ClipRule(broken))[:2] == ("Object", "fallback")
    assert "CUDA out of memory" in caplog.text


# --- where the rules are used: prompts, jobs, results' meta ------------------------------------

def test_read_task_labels_every_prompt_and_sends_the_model_the_text_after_the_label():
    task = {"id": 5, "data": {"video": "v.mp4", "fps": 10,
                              "prompt": "the dog\nObject: the lamp\nthe red disc"}}
    inputs = read_task(task, SHIPPED, "1", max_objects=20)
    assert [(p.obj_id, p.text, p.label, p.label_rule) for p in inputs.prompts] == [
        (1, "the dog", "Animal", "predicted_values"), (2, "the lamp", "Object", "explicit"),
        (3, "the red disc", "Object", "fallback")]
    prompts = text_prompts(["the red disc"], SHIPPED, first_id=4,
                           clip=ClipRule(FakeScores([[0.9, 0.1, 0.1, 0.1]])))
    assert [(p.obj_id, p.label, p.label_rule) for p in prompts] == [(4, "Person", "clip")]


def test_a_prediction_job_keeps_the_label_rule():
    inputs = TaskInputs("1", 5, {}, "v.mp4", 10.0,
                        [ObjectPrompt(1, text="the lamp", label="Object", label_rule="explicit")])
    (row,) = predict_payload(inputs, TEXT_XML)["prompts"]
    assert _text_prompt(*row) == inputs.prompts[0]
    old = _text_prompt(1, "the lamp", "Object")  # a job queued before rules were recorded
    assert (old.label, old.label_rule) == ("Object", None)


def _track(obj_id: int, label: str | None, details: dict) -> ObjectTrack:
    track = Track(obj_id, 8, 8)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    track.set(0, mask, score=1.0)
    return ObjectTrack(obj_id, label, track, 0, mask, 1.0, details)


def test_results_carry_the_label_rule_as_meta():
    tracks = [_track(1, "Animal", {"prompt": "the dog"}), _track(2, "Car", {"prompt": "x"}),
              _track(3, None, {"prompt": "the red sedan"})]
    record_label_rules(tracks, [ObjectPrompt(1, label="Animal", text="the dog",
                                             label_rule="predicted_values"),
                                ObjectPrompt(3, text="?")])
    assert tracks[0].details["label_rule"] == "predicted_values"
    assert "label_rule" not in tracks[1].details and "label_rule" not in tracks[2].details
    state = TaskState(project="1", task="5", plugin="vrshq", model_version="v", video="v.mp4",
                      fps=10.0, frames_count=1, objects=tracks)
    results = state_results(state, SHIPPED)
    by_id = {r["id"]: r for r in results}
    assert by_id["vrshq-5-1"]["meta"] == by_id["vrshq-5-1-mask"]["meta"] == {"label_rule": "predicted_values"}
    assert "meta" not in by_id["vrshq-5-2"] and "meta" not in by_id["vrshq-5-2-mask"]  # e.g. a drawn box
    # A label the config lacks is chosen again from the prompt, and says how.
    assert by_id["vrshq-5-3"]["value"]["labels"] == ["Car"]
    assert by_id["vrshq-5-3"]["meta"] == {"label_rule": "predicted_values"}
    plain = object_results(tracks[1].track, 0, tracks[1].keyframe_mask, "Car", "r", SHIPPED, 10.0, 1,
                           item_index=0, score=0.5)
    assert all("meta" not in r for r in plain)


def test_the_clip_settings_are_checked():
    assert (BackendConfig().label_clip, BackendConfig().label_clip_threshold) == ("auto", 0.8)
    assert BackendConfig.from_env({"VRSHQ_LABEL_CLIP": "OFF"}).label_clip == "off"
    with pytest.raises(ConfigError, match="VRSHQ_LABEL_CLIP must be one of auto, on, off"):
        BackendConfig(label_clip="maybe")
    with pytest.raises(ConfigError, match="VRSHQ_LABEL_CLIP_THRESHOLD"):
        BackendConfig(label_clip_threshold=1.5)
    with pytest.raises(ConfigError, match="VRSHQ_LABEL_CLIP_THRESHOLD must be a number"):
        BackendConfig.from_env({"VRSHQ_LABEL_CLIP_THRESHOLD": "high"})


def test_a_concept_plugin_takes_the_project_labels_when_a_task_has_no_prompt():
    from vrshq.backend.tasks.inputs import labels_as_concepts
    from vrshq.plugins.sam3_plugin import Sam3Plugin
    from vrshq.plugins.vrshq_plugin import VrshqPlugin

    info = _config('<Label value="Person"/>', '<Label value="Car" predicted_values="car,truck"/>',
                   '<Label value="Other" predicted_values="*"/>')  # the fallback: no concept
    empty = TaskInputs("p", 1, {}, "v.mp4", 25.0, [])
    concepts = labels_as_concepts(empty, info, Sam3Plugin())
    assert [(p.obj_id, p.text, p.label) for p in concepts.prompts] == [(1, "Person", "Person"),
                                                                       (2, "Car", "Car")]
    assert all(p.label_rule for p in concepts.prompts)  # by the same label rules as typed prompts
    # not for a plugin of per-object prompts, and a task's own prompts win
    assert labels_as_concepts(empty, info, VrshqPlugin()).prompts == []
    typed = TaskInputs("p", 1, {}, "v.mp4", 25.0, text_prompts(["a dog"], info))
    assert labels_as_concepts(typed, info, Sam3Plugin()) is typed
