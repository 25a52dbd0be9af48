"""Which label of the config a text prompt gets: five rules, tried in order; the first that answers wins.

1. ``explicit``: a line ``Label: prompt`` whose text before the first colon is a config label
   (case-insensitive, spaces trimmed) gets that label, and the model reads only the text after
   the colon. Any other colon is part of the prompt ("time: 3 pm" stays as it is).
2. ``predicted_values``: a word of the prompt is one of a label's ``predicted_values``
   (``<Label value="Animal" predicted_values="dog,cat,horse"/>``, Label Studio's way of mapping a
   model's outputs to labels). A value may be several words ("fire truck").
3. ``label_name``: the label's own name is a word of the prompt ("the person on the left").
4. ``clip``: the label whose CLIP text embedding ("a photo of a {label}") is nearest (cosine) to the
   prompt's, when that similarity is above the threshold; only where the plugin has a text encoder
   and, by default, only with the official CLIP weights (see :func:`clip_rule`).
5. ``fallback``: the config's fallback label (:func:`fallback_label`).

Words are runs of letters, lower-cased ("T-shirt" is the words "t", "shirt"). A value or name
also matches its simple plural: ``+s``; ``+es`` after s, x, z, ch, sh or o; ``y -> ies`` after a
consonant. Irregular plurals (men, people, mice) are values of their own.

Ties (rules 2 and 3): the match that starts at the earliest word of the prompt wins (the head noun
of "the car next to the dog" comes first); at the same word the longer value wins; then the
label that comes first in the config.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

RULES = ("explicit", "predicted_values", "label_name", "clip", "fallback")

# A predicted_values entry that marks the config's fallback label (Label Studio ignores it).
FALLBACK_MARK = "*"
# Without a marked label, a label of this name (case-insensitive) is the fallback.
FALLBACK_NAME = "object"

# The label text CLIP embeds: OpenAI's zero-shot template.
CLIP_TEMPLATE = "a photo of a {label}"
# Cosine similarity the nearest label must exceed; not calibrated on the official weights here
# (none can be fetched in our test environment): VRSHQ_LABEL_CLIP_THRESHOLD moves it.
DEFAULT_CLIP_THRESHOLD = 0.8
# VRSHQ_LABEL_CLIP: "auto" = with the official CLIP weights only, "on" = with any CLIP, "off".
CLIP_MODES = ("auto", "on", "off")

_WORD = re.compile(r"[^\W\d_]+")  # a run of letters, any script
_SIBILANT_ENDS = ("s", "x", "z", "ch", "sh", "o")

# texts, label texts -> one row of cosine similarities per text, or None when unavailable
TextScores = Callable[[list[str], list[str]], "list[list[float]] | None"]


class LabelledConfig(Protocol):
    """What the rules read of a label config (:class:`vrshq.backend.labelstudio.labelconfig.LabelConfigInfo`)."""

    labels: tuple[str, ...]
    predicted_values: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LabelChoice:
    """A prompt's label, the rule that chose it, and the text the model reads."""

    label: str
    rule: str
    text: str


@dataclass(frozen=True)
class ClipRule:
    """Rule 4: a text scorer (the plugin's CLIP text tower) and the similarity to exceed."""

    scores: TextScores
    threshold: float = DEFAULT_CLIP_THRESHOLD


def words(text: str) -> list[str]:
    """The prompt's words: runs of letters, lower-cased."""
    return _WORD.findall(text.lower())


def plural_forms(word: str) -> set[str]:
    """``word`` and its simple plurals (see the module docstring)."""
    forms = {word, word + "s"}
    if word.endswith(_SIBILANT_ENDS):
        forms.add(word + "es")
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    return forms


def predicted_values(config: LabelledConfig) -> tuple[tuple[str, ...], ...]:
    """Each label's predicted_values, one tuple per label (empty where a label has none)."""
    values = tuple(getattr(config, "predicted_values", ()) or ())
    return values + ((),) * (len(config.labels) - len(values))


def fallback_label(config: LabelledConfig) -> str:
    """Rule 5: the first label with ``*`` in its predicted_values, else "Object", else the first label."""
    for label, values in zip(config.labels, predicted_values(config)):
        if FALLBACK_MARK in values:
            return label
    return next((lb for lb in config.labels if lb.casefold() == FALLBACK_NAME), config.labels[0])


def explicit_label(prompt: str, config: LabelledConfig) -> LabelChoice | None:
    """Rule 1: ``Label: prompt`` -> that label and the text after the colon; None otherwise."""
    head, colon, tail = prompt.partition(":")
    name, text = head.strip().casefold(), tail.strip()
    if not colon or not text:
        return None  # "Object:" alone has nothing for the model to read: it is the prompt itself
    # An exact (case-sensitive) name first: Label Studio labels may differ only in case.
    for label in sorted(config.labels, key=lambda lb: lb.strip() != head.strip()):
        if label.strip().casefold() == name:
            return LabelChoice(label, "explicit", text)
    return None


def _phrase_at(prompt_words: list[str], phrase: list[str]) -> int | None:
    """The first word index where ``phrase`` (its last word in any simple plural) starts."""
    n = len(phrase)
    if n == 0:
        return None
    last = plural_forms(phrase[-1])
    for i in range(len(prompt_words) - n + 1):
        if prompt_words[i:i + n - 1] == phrase[:-1] and prompt_words[i + n - 1] in last:
            return i
    return None


def _earliest(prompt_words: list[str], phrases: Sequence[Sequence[str]],
              labels: Sequence[str]) -> str | None:
    """The label of the earliest match; then the longer phrase; then config order."""
    best: tuple[int, int, int] | None = None
    for index, label_phrases in enumerate(phrases):
        for value in label_phrases:
            phrase = words(value)
            at = _phrase_at(prompt_words, phrase)
            if at is not None and (best is None or (at, -len(phrase), index) < best):
                best = (at, -len(phrase), index)
    return labels[best[2]] if best is not None else None


def word_label(prompt: str, config: LabelledConfig) -> LabelChoice | None:
    """Rules 2 and 3: a predicted value, else a label's own name, among the prompt's words."""
    prompt_words = words(prompt)
    found = _earliest(prompt_words, predicted_values(config), config.labels)
    if found is not None:
        return LabelChoice(found, "predicted_values", prompt)
    found = _earliest(prompt_words, [(label,) for label in config.labels], config.labels)
    if found is not None:
        return LabelChoice(found, "label_name", prompt)
    return None


def nearest_label(row: Sequence[float], labels: Sequence[str], threshold: float) -> str | None:
    """Rule 4 on one row of similarities: the best label above ``threshold``; ties: config order."""
    finite = [s for s in row if isinstance(s, (int, float)) and math.isfinite(s)]
    if len(row) != len(labels) or not finite:
        return None
    best = max(finite)
    if not best > threshold:
        return None
    # The first label (config order) holding the best value: the tie rule, not float noise.
    return labels[next(i for i, s in enumerate(row) if s == best)]


def choose_labels(prompts: Sequence[str], config: LabelledConfig,
                  clip: ClipRule | None = None) -> list[LabelChoice]:
    """The label of each prompt by the five rules; CLIP scores every undecided prompt in one call."""
    choices: list[LabelChoice | None] = []
    for prompt in prompts:
        choices.append(explicit_label(prompt, config) or word_label(prompt, config))
    undecided = [i for i, c in enumerate(choices) if c is None]
    if undecided and clip is not None:
        texts = [prompts[i] for i in undecided]
        rows = _clip_rows(clip, texts, config.labels)
        for i, row in zip(undecided, rows or []):
            label = nearest_label(row, config.labels, clip.threshold)
            if label is not None:
                choices[i] = LabelChoice(label, "clip", prompts[i])
    fallback = fallback_label(config)
    return [c or LabelChoice(fallback, "fallback", p) for c, p in zip(choices, prompts)]


def choose_label(prompt: str, config: LabelledConfig, clip: ClipRule | None = None) -> LabelChoice:
    """The label of one prompt (see :func:`choose_labels`)."""
    return choose_labels([prompt], config, clip)[0]


def _clip_rows(clip: ClipRule, texts: list[str], labels: Sequence[str]) -> list[list[float]] | None:
    label_texts = [CLIP_TEMPLATE.format(label=label) for label in labels]
    try:
        rows = clip.scores(texts, label_texts)
    except Exception as exc:  # noqa: BLE001 - an optional rule: its failure must not fail the task
        log.warning("the CLIP label rule is skipped: %s: %s", type(exc).__name__, exc)
        return None
    if rows is not None and len(rows) != len(texts):
        log.warning("the CLIP label rule is skipped: %d rows for %d prompts", len(rows), len(texts))
        return None
    return rows


def clip_rule(backend: Any) -> ClipRule | None:
    """Rule 4 as the backend configures it, or None (off, or a plugin without a text encoder).

    ``VRSHQ_LABEL_CLIP=auto`` asks the plugin for scores from the official CLIP weights only
    (the tiny random test models never qualify), ``on`` from whatever CLIP it loaded.
    """
    config = backend.config
    mode = getattr(config, "label_clip", "auto")
    scores = getattr(backend.plugin, "label_text_scores", None)
    if mode == "off" or scores is None:
        return None
    official_only = mode != "on"

    def score(texts: list[str], label_texts: list[str]) -> list[list[float]] | None:
        return scores(texts, label_texts, official_only=official_only)

    return ClipRule(score, float(getattr(config, "label_clip_threshold", DEFAULT_CLIP_THRESHOLD)))


def record_label_rules(tracks: Sequence[Any], prompts: Sequence[Any]) -> None:
    """Put each prompt's ``label_rule`` into its track's ``details`` (the prediction's meta reads it),
    unless the plugin recorded one (sam3 numbers its instances anew: ids are not prompt ids)."""
    rules = {p.obj_id: p.label_rule for p in prompts if getattr(p, "label_rule", None)}
    for track in tracks:
        if track.obj_id in rules:
            track.details.setdefault("label_rule", rules[track.obj_id])


__all__ = ["CLIP_MODES", "CLIP_TEMPLATE", "DEFAULT_CLIP_THRESHOLD", "FALLBACK_MARK", "FALLBACK_NAME",
           "RULES", "ClipRule", "LabelChoice", "choose_label", "choose_labels", "clip_rule",
           "explicit_label", "fallback_label", "nearest_label", "plural_forms", "predicted_values",
           "record_label_rules", "word_label", "words"]
