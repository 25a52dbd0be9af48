"""Tokenisation parity with the official stack (transformers 4.31 slow LlamaTokenizer).

The golden ids in tests/fixtures/tokenizer/golden.json were produced by transformers 4.31.0
(scripts/make_tokenizer_fixtures.py, side venv) from the committed tiny SentencePiece model.
transformers 4.31 is not installed here, so its run cannot be repeated; what is checked instead:
the model file is what the script trains (byte for byte), the golden cases are the script's
cases, and every golden id list agrees with SentencePiece run directly on the model under 4.31's
documented rules (LLaVA's split at <image>, the strip on both sides of [SEG]/[TAK], a fresh dummy
prefix per piece in legacy mode), which is not what transformers 5.x gives (see
vrshq/model/tokenization.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm

from vrshq.model.prompt import IMAGE_TOKEN_INDEX, SEG_TOKEN, TAK_TOKEN, build_prompt
from vrshq.model.tokenization import (
    expanded_positions,
    hidden_state_positions,
    load_tokenizer,
    tokenize_prompt,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
MODES = {"legacy": True, "non_legacy": False}


@pytest.fixture(scope="module", params=list(MODES))
def mode(request):
    return request.param, load_tokenizer(FIXTURES, legacy=MODES[request.param])


def _case_id(case):
    if case["kind"] == "prompt":
        return f"prompt-{case['expression'].strip()[:20]}-T{case['num_frames']}"
    return f"text-{case['text'][:20]!r}"


def _script():
    """scripts/make_tokenizer_fixtures.py as a module (its cases and its trainer run here)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_tokenizer_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_tokenizer_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fixture_is_what_the_script_makes(tmp_path):
    script = _script()
    # The model: the script's trainer (same sentencepiece pin) writes the committed file again.
    assert spm.__version__ == GOLDEN["sentencepiece"] == dict(p.split("==") for p in script.PINS)["sentencepiece"]
    assert script.train(tmp_path).read_bytes() == (FIXTURES / "tokenizer.model").read_bytes()
    # The cases: the script's, in its order, with its prompt strings.
    want = [("prompt", e, t, script.official_prompt(e, t)) for e, t in script.PROMPT_CASES]
    want += [("text", None, None, text) for text in script.TEXT_CASES]
    assert [(c["kind"], c["expression"], c["num_frames"], c["text"]) for c in CASES] == want
    # The version the script pins is the one the golden file says made it.
    assert GOLDEN["made_by"] == "scripts/make_tokenizer_fixtures.py"
    assert GOLDEN["transformers"] == dict(p.split("==") for p in script.PINS)["transformers"] == "4.31.0"
    assert GOLDEN["vocab_size"] == spm.SentencePieceProcessor(model_file=str(FIXTURES / "tokenizer.model")).get_piece_size()


def _sp_ids_431(sp: spm.SentencePieceProcessor, text: str, legacy: bool, seg: int, tak: int) -> list[int] | None:
    """4.31's ids for ``text`` from SentencePiece alone, or None where these rules do not reach.

    LLaVA's tokenizer_image_token: BOS once, -200 between the chunks around "<image>", each chunk
    tokenised on its own. 4.31's slow tokenizer on a chunk: split at the added tokens [SEG]/[TAK],
    stripping the whitespace on both sides of them; each remaining non-empty piece goes through
    SentencePiece on its own, with the dummy prefix ("legacy", 4.31's default). Non-legacy mode
    differs only after an added token (no fresh prefix), so only the first piece of each chunk is
    checked there. Chunks holding <s>, </s> or <unk> (split without stripping) are left out.
    """
    ids = [sp.bos_id()]
    for k, chunk in enumerate(text.split("<image>")):
        if any(t in chunk for t in ("<s>", "</s>", "<unk>")):
            return None
        if k:
            ids.append(-200)
        parts = re.split(r"\s*(\[SEG\]|\[TAK\])\s*", chunk)
        for n, part in enumerate(parts):
            if part in ("[SEG]", "[TAK]"):
                ids.append(seg if part == "[SEG]" else tak)
            elif part:
                if not legacy and n > 0:
                    return None
                ids += sp.encode(part)
    return ids


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_golden_ids_are_sentencepiece_under_the_431_rules(case):
    """Independent of vrshq's tokenizer: SentencePiece itself and the rules above."""
    sp = spm.SentencePieceProcessor(model_file=str(FIXTURES / "tokenizer.model"))
    seg, tak = GOLDEN["seg_token_id"], GOLDEN["tak_token_id"]
    checked = []
    for name, legacy in MODES.items():
        want = _sp_ids_431(sp, case["text"], legacy, seg, tak)
        if want is not None:
            assert case[name]["ids"] == want, name
            checked.append(name)
        # 4.31's signature (transformers 5.x differs here): no lone "▁" piece just before an
        # added token, whatever the text had there.
        pieces = case[name]["pieces"]
        for p, piece in enumerate(pieces):
            if piece in ("[SEG]", "[TAK]") and p:
                assert pieces[p - 1] != "▁", (name, pieces[max(0, p - 3):p + 2])
    # Legacy mode (what VRS-HQ ran) is checked on every case but the three with <s>, </s>, <unk>.
    has_special = any(t in case["text"] for t in ("<s>", "</s>", "<unk>"))
    assert ("legacy" in checked) == (not has_special), checked


def test_seg_and_tak_ids_follow_the_vocabulary(mode):
    _, tok = mode
    n = tok.vocab_size
    assert (tok.token_id(SEG_TOKEN), tok.token_id(TAK_TOKEN)) == (n, n + 1) == (GOLDEN["seg_token_id"], GOLDEN["tak_token_id"])
    assert len(tok) == n + 2
    # the official code reads the id as the first id of tokenising the string without BOS
    assert tok.encode(SEG_TOKEN, add_special_tokens=False) == [n]
    assert tok.add_tokens([SEG_TOKEN, TAK_TOKEN]) == 0


def test_default_is_legacy_like_431():
    assert load_tokenizer(FIXTURES).legacy is True


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_ids_match_transformers_431(case, mode):
    name, tok = mode
    want = case[name]
    got = tokenize_prompt(tok, case["text"])
    assert tok.decode_pieces(got) == want["pieces"]
    assert got == want["ids"]


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "prompt"], ids=_case_id)
def test_our_prompt_is_the_official_prompt(case):
    assert build_prompt(case["expression"], case["num_frames"]) == case["text"]


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "prompt"], ids=_case_id)
def test_hidden_state_positions(case, mode):
    name, tok = mode
    want = case[name]
    ids = tokenize_prompt(tok, build_prompt(case["expression"], case["num_frames"]))
    seg = hidden_state_positions(ids, tok.token_id(SEG_TOKEN))
    tak = hidden_state_positions(ids, tok.token_id(TAK_TOKEN))
    assert (seg, tak) == (want["seg_positions"], want["tak_positions"])
    assert len(seg) == case["num_frames"] and len(tak) == 1
    # What is read: the ")" of "(i)" before each [SEG] (the space was stripped, no "▁" piece),
    # and the "▁is" before [TAK], in both modes.
    assert tok.decode_pieces([ids[p] for p in seg]) == [")"] * case["num_frames"]
    assert tok.decode_pieces([ids[p] for p in tak]) == ["▁is"]
    assert [ids[p] for p in seg] == want["before_seg"] and [ids[p] for p in tak] == want["before_tak"]


def test_after_seg_the_piece_differs_between_legacy_modes():
    # legacy=True (4.31 default): the chunk after [SEG] gets a fresh dummy prefix, a lone "▁".
    case = next(c for c in CASES if c["text"] == "a [SEG] b")
    assert case["legacy"]["pieces"] == ["<s>", "▁a", "[SEG]", "▁", "b"]
    assert case["non_legacy"]["pieces"] == ["<s>", "▁a", "[SEG]", "b"]


def test_whole_string_sentencepiece_is_not_parity():
    # Encoding the prompt in one SentencePiece call (keeping the spaces) would read other tokens.
    sp = spm.SentencePieceProcessor(model_file=str(FIXTURES / "tokenizer.model"))
    case = next(c for c in CASES if c["kind"] == "prompt" and c["num_frames"] == 2)
    tail = case["text"].split("<image>")[-1]
    naive = sp.encode(tail, out_type=str)
    assert naive != case["legacy"]["pieces"][-len(naive):]


def test_expanded_positions_shift_by_111_per_image(mode):
    _, tok = mode
    ids = tokenize_prompt(tok, build_prompt("the red car", 3))
    assert ids.count(IMAGE_TOKEN_INDEX) == 3
    seg = hidden_state_positions(ids, tok.token_id(SEG_TOKEN))
    assert expanded_positions(seg, ids) == [p + 3 * 111 for p in seg]
    first_image = ids.index(IMAGE_TOKEN_INDEX)
    assert expanded_positions([first_image - 1, first_image + 1], ids) == [first_image - 1, first_image + 1 + 111]
    assert expanded_positions(seg, ids, tokens_per_image=1) == seg


def test_saved_checkpoint_folder(tmp_path):
    # a merged VRS-HQ checkpoint folder: added_tokens.json holds [SEG]/[TAK]; tokenizer_config sets legacy
    shutil.copy(FIXTURES / "tokenizer.model", tmp_path / "tokenizer.model")
    n = GOLDEN["vocab_size"]
    (tmp_path / "added_tokens.json").write_text(json.dumps({TAK_TOKEN: n + 1, SEG_TOKEN: n}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"legacy": False, "add_bos_token": True}))
    tok = load_tokenizer(tmp_path)
    assert tok.legacy is False and len(tok) == n + 2
    case = CASES[1]
    assert tokenize_prompt(tok, case["text"]) == case["non_legacy"]["ids"]
    (tmp_path / "added_tokens.json").write_text(json.dumps({SEG_TOKEN: n + 5}))
    with pytest.raises(ValueError, match="added_tokens.json"):
        load_tokenizer(tmp_path)
