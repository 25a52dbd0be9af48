"""The LLaMA tokenizer exactly as VRS-HQ ran it (transformers 4.31 slow ``LlamaTokenizer``), and the
positions of the hidden states read for ``[SEG]`` / ``[TAK]``.

Why not transformers 5.x's ``LlamaTokenizer``: VRS-HQ reads the hidden state at the position just
*before* each ``[SEG]`` / ``[TAK]``, so which token sits there decides the mask. Under 4.31 the slow
tokenizer split the text on added tokens and **stripped the whitespace on both sides** of
``[SEG]`` / ``[TAK]`` (tokens added with ``add_tokens(..., special_tokens=True)`` are plain strings,
not ``AddedToken``s, so ``PreTrainedTokenizer.tokenize`` stripped by default), then ran SentencePiece
on each piece on its own, so each piece got SentencePiece's dummy-prefix "▁" again (``legacy=True``,
4.31's default). transformers 5.24 (tokenizers-backed ``LlamaTokenizer``, same model, same
``add_tokens``) keeps the space before ``[SEG]``/``[TAK]`` as a lone "▁" piece and does not re-add the
"▁" after it, with or without ``legacy=False``. On the fixture model (``[SEG]`` = 400, "▁" = 329):

    "a [SEG] b"            4.31: <s> ▁a [SEG] ▁ b        5.24: <s> ▁a ▁ [SEG] ▁ b
    "... (1) [SEG], ..."   4.31: ▁( 1 ) [SEG] ▁ ,        5.24: ▁( 1 ) ▁ [SEG] ,
    "... it is [TAK]."     4.31: ▁is [TAK] ▁ .           5.24: ▁is ▁ [TAK] .

so 5.x would read the hidden state of "▁" instead of ")" / "▁is". ``tests/test_tokenization.py``
compares with ids made by transformers 4.31.0 itself (``scripts/make_tokenizer_fixtures.py``).

Behaviour reproduced (re-written, not copied) from transformers 4.31.0:
* ``tokenization_utils.py`` ``PreTrainedTokenizer.tokenize`` (split on no-split tokens, strip rule);
* ``models/llama/tokenization_llama.py`` ``tokenize`` / ``_tokenize`` (``legacy`` handling),
  ``build_inputs_with_special_tokens`` (BOS yes, EOS no);
* ``tokenization_utils.py`` ``_add_tokens`` (new ids are ``len(tokenizer)``, ``len(tokenizer) + 1``).
``tokenize_prompt`` follows LLaVA's ``tokenizer_image_token`` (``model/llava/mm_utils.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from vrshq.model.prompt import IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN, TAK_TOKEN

SPIECE_UNDERLINE = "▁"
BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<s>", "</s>", "<unk>"
TOKENS_PER_IMAGE = 112  # Chat-UniVi: 64 + 32 + 16 merged visual tokens per <image>


class LlamaTokenizer431:
    """SentencePiece LLaMA tokenizer with transformers 4.31's slow-tokenizer semantics.

    ``<s>``, ``</s>`` and ``<unk>`` are never split and never strip their neighbours (4.31 wraps them in
    ``AddedToken(lstrip=False, rstrip=False)``). Tokens added with :meth:`add_tokens` are never split
    and strip the whitespace on both sides of themselves.
    """

    def __init__(
        self,
        sp_model: spm.SentencePieceProcessor,
        *,
        legacy: bool = True,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
    ) -> None:
        self.sp_model = sp_model
        self.legacy = legacy
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.added_tokens: dict[str, int] = {}
        self.bos_token_id = sp_model.piece_to_id(BOS_TOKEN)
        self.eos_token_id = sp_model.piece_to_id(EOS_TOKEN)
        self.unk_token_id = sp_model.piece_to_id(UNK_TOKEN)
        self._special = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
        self._splitter = self._make_splitter()

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size + len(self.added_tokens)

    def add_tokens(self, tokens: Iterable[str]) -> int:
        """``add_tokens(tokens, special_tokens=True)``: unknown strings get the next ids, in order."""
        added = 0
        for token in tokens:
            if self._known(token) or token in self.added_tokens:
                continue
            self.added_tokens[token] = len(self)
            added += 1
        self._splitter = self._make_splitter()
        return added

    def token_id(self, token: str) -> int:
        """Id of one token string (added, special or SentencePiece piece; ``<unk>`` if unknown)."""
        if token in self.added_tokens:
            return self.added_tokens[token]
        return self.sp_model.piece_to_id(token)

    def tokenize(self, text: str) -> list[str]:
        """Token strings, as 4.31's ``LlamaTokenizer.tokenize``."""
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        pieces = [p for p in self._splitter.split(text) if p]
        for i, piece in enumerate(pieces):
            if piece not in self.added_tokens:
                continue  # not an added token, or <s> </s> <unk>: these strip nothing
            if i + 1 < len(pieces) and pieces[i + 1]:
                pieces[i + 1] = pieces[i + 1].lstrip()
            if i > 0 and pieces[i - 1]:
                pieces[i - 1] = pieces[i - 1].rstrip()
        tokens: list[str] = []
        for piece in pieces:
            if not piece:
                continue
            if piece in self.added_tokens or piece in self._special:
                tokens.append(piece)
            else:
                tokens.extend(self._sentencepiece(piece))
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """``tokenizer(text).input_ids``: BOS + ids (+ EOS only if ``add_eos_token``)."""
        ids = [self.token_id(t) for t in self.tokenize(text)]
        if not add_special_tokens:
            return ids
        return (
            [self.bos_token_id] * self.add_bos_token + ids + [self.eos_token_id] * self.add_eos_token
        )

    def decode_pieces(self, ids: Sequence[int]) -> list[str]:
        """The piece string of each id (``<image>`` for -200), for debugging and tests."""
        by_id = {v: k for k, v in self.added_tokens.items()}
        out = []
        for i in ids:
            if i == IMAGE_TOKEN_INDEX:
                out.append(IMAGE_TOKEN)
            elif i in by_id:
                out.append(by_id[i])
            else:
                out.append(self.sp_model.id_to_piece(i))
        return out

    def _sentencepiece(self, text: str) -> list[str]:
        # 4.31 LlamaTokenizer._tokenize. Legacy: every piece gets SentencePiece's dummy prefix "▁".
        # Non-legacy: only the start of the whole text does ("▁" was prepended in tokenize); a piece
        # that follows a special token and does not start with a space loses the "▁" again, and the
        # shortened piece is looked up as is (it may not exist: then it becomes <unk>, as in 4.31).
        if self.legacy:
            return self.sp_model.encode(text, out_type=str)
        is_first = text.startswith(SPIECE_UNDERLINE)
        if is_first:
            text = text[1:]
        tokens = self.sp_model.encode(text, out_type=str)
        if not is_first and not text.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            head = tokens[0][1:]
            tokens = ([head] if head else []) + tokens[1:]
        return tokens

    def _known(self, token: str) -> bool:
        return token == UNK_TOKEN or self.sp_model.piece_to_id(token) != self.unk_token_id

    def _make_splitter(self) -> re.Pattern[str]:
        no_split = sorted({*self._special, *self.added_tokens}, key=len, reverse=True)
        return re.compile("(" + "|".join(re.escape(t) for t in no_split) + ")")


def load_tokenizer(folder: str | Path, *, legacy: bool | None = None) -> LlamaTokenizer431:
    """Load ``tokenizer.model`` from ``folder`` and add ``[SEG]``, ``[TAK]`` as VRS-HQ's evaluation does.

    ``legacy`` defaults to ``tokenizer_config.json``'s value, else ``True`` (4.31's default).
    Tokens in ``added_tokens.json`` (the merged VRS-HQ checkpoint saves ``[SEG]``/``[TAK]`` there)
    keep their ids; adding ``[SEG]``/``[TAK]`` again is then a no-op, as in 4.31.
    """
    folder = Path(folder)
    config = _read_json(folder / "tokenizer_config.json")
    if legacy is None:
        legacy = True if config.get("legacy") is None else bool(config["legacy"])
    sp_model = spm.SentencePieceProcessor()
    sp_model.Load(str(folder / "tokenizer.model"))
    tok = LlamaTokenizer431(
        sp_model,
        legacy=legacy,
        add_bos_token=bool(config.get("add_bos_token", True)),
        add_eos_token=bool(config.get("add_eos_token", False)),
    )
    saved = _read_json(folder / "added_tokens.json")
    for token, index in sorted(saved.items(), key=lambda kv: kv[1]):
        if index != len(tok):
            raise ValueError(f"{folder / 'added_tokens.json'}: {token!r} has id {index}, expected {len(tok)}")
        tok.add_tokens([token])
    tok.add_tokens([SEG_TOKEN])
    tok.add_tokens([TAK_TOKEN])
    return tok


def tokenize_prompt(tokenizer: LlamaTokenizer431, prompt: str) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: ids with one ``IMAGE_TOKEN_INDEX`` (-200) per ``<image>``.

    Each chunk between ``<image>``s is tokenised on its own (each call adds BOS and SentencePiece's
    leading "▁"); the first chunk's BOS is kept once, every chunk's first id is dropped after that.
    """
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split(IMAGE_TOKEN)]
    keep_bos = bool(chunks[0]) and chunks[0][0] == tokenizer.bos_token_id
    ids = [tokenizer.bos_token_id] if keep_bos else []
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[1:] if keep_bos else chunk)
    return ids


def hidden_state_positions(input_ids: Sequence[int], token_id: int) -> list[int]:
    """Positions p with ``input_ids[p + 1] == token_id`` (LISA convention), before image expansion."""
    return [p for p in range(len(input_ids) - 1) if input_ids[p + 1] == token_id]


def expanded_positions(
    positions: Sequence[int], input_ids: Sequence[int], tokens_per_image: int = TOKENS_PER_IMAGE
) -> list[int]:
    """Map positions in ``input_ids`` to the sequence where each -200 became ``tokens_per_image`` embeddings.

    Each ``<image>`` before a position shifts it by ``tokens_per_image - 1`` (VRS-HQ's ``token_add``,
    111 per image; VRS-HQ applies the total shift, which is the same since all images come first).
    """
    image_at = [i for i, t in enumerate(input_ids) if t == IMAGE_TOKEN_INDEX]
    return [p + (tokens_per_image - 1) * sum(1 for i in image_at if i < p) for p in positions]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
