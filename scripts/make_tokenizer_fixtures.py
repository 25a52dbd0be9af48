#!/usr/bin/env python3
"""Make the tokenizer parity fixtures: a tiny SentencePiece model and golden ids from transformers 4.31.

VRS-HQ ran transformers 4.31's slow ``LlamaTokenizer``; which token sits just before each ``[SEG]`` /
``[TAK]`` (the hidden state that is read) depends on its whitespace handling. This script

1. creates a side venv (default ``/tmp/vrshq-tf431``) with ``transformers==4.31.0`` and
   ``sentencepiece`` (Python 3.11 works), unless it exists already;
2. inside it, trains a small BPE SentencePiece model deterministically, with LLaMA's normaliser
   settings (identity normalisation, dummy prefix, no whitespace squashing, split digits, byte
   fallback), and writes it to ``tests/fixtures/tokenizer/tokenizer.model``;
3. loads it with 4.31's ``LlamaTokenizer`` through ``save_pretrained``/``from_pretrained(use_fast=False)``
   (the path the official code takes), adds ``[SEG]`` and ``[TAK]`` with ``special_tokens=True`` as
   VRS-HQ's ``evaluation_multiseg.py`` does, and tokenises official prompts and awkward strings with
   LLaVA's ``tokenizer_image_token`` logic (re-implemented below), for ``legacy=True`` (4.31's
   default) and ``legacy=False``;
4. writes ``tests/fixtures/tokenizer/golden.json``.

The prompt strings are built here independently of ``vrshq.model.prompt`` (from the official templates
in VRS-HQ ``dataset/utils.py`` and LLaVA ``conversation.py`` llava_v1), so the test checks both.

Usage: python scripts/make_tokenizer_fixtures.py [--venv DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tokenizer"
DEFAULT_VENV = Path("/tmp/vrshq-tf431")
PINS = ["transformers==4.31.0", "sentencepiece==0.2.3"]

# ---- official strings (VRS-HQ dataset/utils.py index 0; LLaVA conversation.py llava_v1) ----
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)
SHORT_Q = (
    "Reference Video: <video> \nWhat is {sent} in the Reference Video? Please respond with segmentation "
    "masks for each frame and for the entire video separately."
)
LONG_Q = (
    "Reference Video: <video> \n{sent} Please find it in the Reference Video and respond with "
    "segmentation masks for each frame and for the entire video separately."
)
ANSWER = "Sure, the segmentation result of each frame is [SEG], while for the entire video it is [TAK]."

PROMPT_CASES = [  # (expression as given, T')
    ("the red car", 1),
    ("the red car", 2),
    ("The  Dog\tRunning  to the LEFT ", 6),
    ("person who is holding a cup, then puts it down.", 11),
    ("which animal is the fastest?", 3),
    ("what is the object that moves first ?", 11),
    ("  The café's 🚗 — naïve zebra  ", 2),
    ("the 2nd car from (1) left", 6),
]
TEXT_CASES = [
    "[SEG]",
    "a [SEG] b",
    "a  [SEG]\n, b",
    "x[SEG][TAK]y",
    "is (0) [SEG], (1) [SEG], while it is [TAK].",
    "[SEG] [TAK]",
    "end.</s>",
    "a </s> b",
    "<s>a <unk> b",
    "\u2581weird \u2581underline",
    "tab\there  two  spaces",
    "(0)<image>, (1)<image> \nWhat",
    "<image>",
    "",
    "no image at all",
]


def official_prompt(expression: str, num_frames: int) -> str:
    sent = " ".join(expression.lower().split())
    question = (LONG_Q if sent[-1] == "?" else SHORT_Q).format(sent=sent)
    question = question.replace("<video>", ", ".join(f"({i})<image>" for i in range(num_frames)))
    answer = ANSWER.replace("[SEG]", ", ".join(f"({i}) [SEG]" for i in range(num_frames)))
    # get_prompt, sep_style TWO: system + sep, then role + ": " + msg + (sep, sep2) alternately
    return SYSTEM + " " + "USER: " + question + " " + "ASSISTANT: " + answer + "</s>"


def corpus() -> list[str]:
    lines = [SYSTEM, SHORT_Q, LONG_Q, ANSWER, *TEXT_CASES]
    lines += [official_prompt(e, t) for e, t in PROMPT_CASES]
    lines += [
        "Sure, it is the car on the left. The dog runs to the right while the person holds a cup.",
        "What is in the video? Please find the object, then segment it in each frame.",
        "a zebra, a horse and a bird move in the entire video; the fastest animal is first.",
        "numbers 0 1 2 3 4 5 6 7 8 9 10 11 (0) (1) (2) (10) in frame-level and video-level.",
    ]
    return lines * 4


# ---- inside the side venv ----
def train(out: Path) -> Path:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=400,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path = out / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    # LLaVA mm_utils.tokenizer_image_token, re-written: BOS once, -200 between chunks.
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
    ids = [bos] if offset else []
    for k, c in enumerate(chunks):
        if k:
            ids.append(-200)
        ids.extend(c[offset:])
    return ids


def inside(out: Path) -> None:
    import sentencepiece
    import transformers
    from transformers import AutoTokenizer, LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    model = train(out)
    results: dict = {
        "made_by": "scripts/make_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "sentencepiece": sentencepiece.__version__,
    }
    for legacy in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            LlamaTokenizer(vocab_file=str(model), legacy=legacy).save_pretrained(tmp)
            tok = AutoTokenizer.from_pretrained(
                tmp, use_fast=False, model_max_length=2048, padding_side="right", legacy=legacy
            )
        assert type(tok).__name__ == "LlamaTokenizer", type(tok)
        tok.pad_token = tok.unk_token
        tok.add_tokens("[SEG]", special_tokens=True)
        tok.add_tokens("[TAK]", special_tokens=True)
        seg = tok("[SEG]", add_special_tokens=False).input_ids[0]
        tak = tok("[TAK]", add_special_tokens=False).input_ids[0]
        results.update(vocab_size=tok.vocab_size, seg_token_id=seg, tak_token_id=tak)
        key = "legacy" if legacy else "non_legacy"
        cases = [("prompt", e, t, official_prompt(e, t)) for e, t in PROMPT_CASES]
        cases += [("text", None, None, s) for s in TEXT_CASES]
        for i, (kind, expr, frames, text) in enumerate(cases):
            ids = tokenizer_image_token(text, tok)
            pieces = ["<image>" if x == -200 else tok.convert_ids_to_tokens(x) for x in ids]
            before = {
                name: [p for p in range(len(ids) - 1) if ids[p + 1] == tid] for name, tid in (("seg", seg), ("tak", tak))
            }
            entry = results.setdefault("cases", [{} for _ in cases])[i]
            entry.update(kind=kind, expression=expr, num_frames=frames, text=text)
            entry[key] = {
                "ids": ids,
                "pieces": pieces,
                "seg_positions": before["seg"],
                "tak_positions": before["tak"],
                "before_seg": [ids[p] for p in before["seg"]],
                "before_tak": [ids[p] for p in before["tak"]],
            }
    (out / "golden.json").write_text(_dump(results), encoding="utf-8")
    print(f"wrote {model} ({model.stat().st_size} bytes) and {out / 'golden.json'}")


def _dump(results: dict) -> str:
    # one case per line keeps the file small and diffable
    head = {k: v for k, v in results.items() if k != "cases"}
    lines = [json.dumps(c, ensure_ascii=False) for c in results["cases"]]
    body = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    return body + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="side venv with transformers 4.31")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture folder")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.out.resolve())
        return
    python = args.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    subprocess.run([str(python), __file__, "--inside", "--out", str(args.out.resolve())], check=True)


if __name__ == "__main__":
    main()
