"""The llava_v1 conversation VRS-HQ scores: exact strings, written out by hand from the brief."""

from __future__ import annotations

from pathlib import Path

import pytest

from vrshq.model.prompt import (
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    SEG_TOKEN,
    TAK_TOKEN,
    build_prompt,
    normalize_expression,
)
from vrshq.model.tokenization import hidden_state_positions, load_tokenizer, tokenize_prompt

SYS = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. "
)


def test_constants():
    assert (IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN, TAK_TOKEN) == ("<image>", -200, "[SEG]", "[TAK]")


def test_statement_one_frame():
    assert build_prompt("the red car", 1) == (
        SYS + "USER: Reference Video: (0)<image> \nWhat is the red car in the Reference Video? Please respond "
        "with segmentation masks for each frame and for the entire video separately. ASSISTANT: Sure, the "
        "segmentation result of each frame is (0) [SEG], while for the entire video it is [TAK].</s>"
    )


def test_statement_three_frames_normalised():
    assert build_prompt("  The Red\tCAR  on the\nleft ", 3) == (
        SYS + "USER: Reference Video: (0)<image>, (1)<image>, (2)<image> \nWhat is the red car on the left in "
        "the Reference Video? Please respond with segmentation masks for each frame and for the entire video "
        "separately. ASSISTANT: Sure, the segmentation result of each frame is (0) [SEG], (1) [SEG], (2) [SEG], "
        "while for the entire video it is [TAK].</s>"
    )


def test_question_one_frame():
    assert build_prompt("Which animal is the fastest?", 1) == (
        SYS + "USER: Reference Video: (0)<image> \nwhich animal is the fastest? Please find it in the Reference "
        "Video and respond with segmentation masks for each frame and for the entire video separately. "
        "ASSISTANT: Sure, the segmentation result of each frame is (0) [SEG], while for the entire video it is "
        "[TAK].</s>"
    )


def test_question_three_frames_trailing_space():
    # the "?" test applies to the normalised expression, so trailing whitespace does not hide it
    assert build_prompt("Who  moves first? ", 3) == (
        SYS + "USER: Reference Video: (0)<image>, (1)<image>, (2)<image> \nwho moves first? Please find it in "
        "the Reference Video and respond with segmentation masks for each frame and for the entire video "
        "separately. ASSISTANT: Sure, the segmentation result of each frame is (0) [SEG], (1) [SEG], (2) [SEG], "
        "while for the entire video it is [TAK].</s>"
    )


def test_counts_for_eleven_frames():
    p = build_prompt("a dog", 11)
    assert p.count(IMAGE_TOKEN) == 11 and p.count(SEG_TOKEN) == 11 and p.count(TAK_TOKEN) == 1
    assert "(10)<image> \n" in p and "(10) [SEG], while" in p


def test_normalize_expression():
    assert normalize_expression(" A\u00a0B\n\tC ") == "a b c"
    with pytest.raises(ValueError):
        normalize_expression(" \n ")


@pytest.mark.parametrize("frames", [0, -1, 1.0, True])
def test_bad_frame_count(frames):
    with pytest.raises(ValueError):
        build_prompt("a dog", frames)


def test_hidden_state_positions_on_a_tokenised_prompt():
    tok = load_tokenizer(Path(__file__).parent / "fixtures" / "tokenizer")
    ids = tokenize_prompt(tok, build_prompt("the red car", 2))
    seg, tak = tok.token_id(SEG_TOKEN), tok.token_id(TAK_TOKEN)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 2 and ids[-1] == tok.eos_token_id
    seg_pos = hidden_state_positions(ids, seg)
    tak_pos = hidden_state_positions(ids, tak)
    assert [ids[p + 1] for p in seg_pos] == [seg, seg] and [ids[p + 1] for p in tak_pos] == [tak]
    pieces = tok.decode_pieces(ids)
    # ... "▁(", "0", ")", [SEG], "▁", ",", "▁(", "1", ")", [SEG], "▁", ",", ... "▁is", [TAK], "▁", ".", "</s>"
    assert [pieces[p - 2 : p + 3] for p in seg_pos] == [["▁(", "0", ")", "[SEG]", "▁"], ["▁(", "1", ")", "[SEG]", "▁"]]
    assert pieces[tak_pos[0] : tak_pos[0] + 5] == ["▁is", "[TAK]", "▁", ".", "</s>"]
    assert hidden_state_positions([1, 5, 7], 9) == [] and hidden_state_positions([], 9) == []
    assert hidden_state_positions([9, 1, 9], 9) == [1]  # position -1 never exists
