"""The llava_v1 conversation that VRS-HQ scores in one teacher-forced forward pass.

VRS-HQ does not generate its answer: at inference it writes the whole conversation, question *and*
answer, and reads the last-layer hidden states just before each ``[SEG]`` (one per sampled frame) and
before ``[TAK]`` (the whole video). This module builds that string exactly.

Followed (re-written, not copied):
* question and answer templates: VRS-HQ ``dataset/utils.py`` (``UNIFIED_SHORT_QUESTION_LIST[0]``,
  ``UNIFIED_LONG_QUESTION_LIST[0]``, ``ANSWER_LIST[0]``, ``convert2imagesplit``);
* the rewriting of ``[SEG]`` into one numbered entry per frame: VRS-HQ cliptree model, inference path;
* the conversation: ``conv_templates["llava_v1"]`` and ``Conversation.get_prompt`` (style TWO) in
  ``model/llava/conversation.py``.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200
VIDEO_TOKEN = "<video>"
SEG_TOKEN = "[SEG]"
TAK_TOKEN = "[TAK]"

# llava_v1 (sep_style TWO): system + " " + "USER: " + q + " " + "ASSISTANT: " + a + "</s>".
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP = " "
SEP2 = "</s>"

# Eval always uses index 0 of each list; the "question" template applies when the expression ends in "?".
STATEMENT_TEMPLATE = (
    "Reference Video: " + VIDEO_TOKEN + " \n"
    "What is {sent} in the Reference Video? "
    "Please respond with segmentation masks for each frame and for the entire video separately."
)
QUESTION_TEMPLATE = (
    "Reference Video: " + VIDEO_TOKEN + " \n"
    "{sent} Please find it in the Reference Video "
    "and respond with segmentation masks for each frame and for the entire video separately."
)
ANSWER = "Sure, the segmentation result of each frame is [SEG], while for the entire video it is [TAK]."

def normalize_expression(expression: str) -> str:
    """Lower-case and collapse every run of whitespace to one space, trimming both ends."""
    sent = " ".join(expression.lower().split())
    if not sent:
        raise ValueError("the referring expression is empty")
    return sent


def question_for(expression: str) -> str:
    """The user turn before ``<video>`` is expanded: the question template when the expression ends in '?'."""
    sent = normalize_expression(expression)
    template = QUESTION_TEMPLATE if sent.endswith("?") else STATEMENT_TEMPLATE
    return template.format(sent=sent)


def expand_video(text: str, num_frames: int) -> str:
    """``<video>`` -> ``"(0)<image>, (1)<image>, ..."``, one entry per sampled frame."""
    _check_frames(num_frames)
    if text.count(VIDEO_TOKEN) != 1:
        raise ValueError(f"expected exactly one {VIDEO_TOKEN} in {text!r}")
    return text.replace(VIDEO_TOKEN, ", ".join(f"({i}){IMAGE_TOKEN}" for i in range(num_frames)))


def expand_seg(text: str, num_frames: int) -> str:
    """``[SEG]`` -> ``"(0) [SEG], (1) [SEG], ..."``, one entry per sampled frame."""
    _check_frames(num_frames)
    return text.replace(SEG_TOKEN, ", ".join(f"({i}) {SEG_TOKEN}" for i in range(num_frames)))


def build_prompt(expression: str, num_frames: int) -> str:
    """The full llava_v1 conversation, with the given answer, that VRS-HQ feeds to the MLLM."""
    question = expand_video(question_for(expression), num_frames)
    answer = expand_seg(ANSWER, num_frames)
    user, assistant = ROLES
    return SYSTEM + SEP + f"{user}: {question}" + SEP + f"{assistant}: {answer}" + SEP2


def _check_frames(num_frames: int) -> None:
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
