"""COCO RLE, Label Studio brush RLE and mask boxes: round trips and malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrshq.errors import MaskFormatError
from vrshq.masks import (
    box_to_percent,
    decode_brush,
    decode_rle,
    encode_brush,
    encode_rle,
    mask_to_box,
    mask_to_percent_box,
    normalize_rle,
    rle_area,
    rle_to_bbox,
)


def _sample_masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    masks = {
        "empty": np.zeros((37, 53), bool),
        "full": np.ones((37, 53), bool),
        "random": rng.random((37, 53)) < 0.4,
        "one_px": np.zeros((1, 1), bool),
        "one_px_set": np.ones((1, 1), bool),
        "single_row": rng.random((1, 29)) < 0.5,
        "single_col": rng.random((31, 1)) < 0.5,
    }
    border = np.zeros((37, 53), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    masks["border"] = border
    corner = np.zeros((37, 53), bool)
    corner[-5:, -7:] = True
    masks["bottom_right"] = corner
    top_left = np.zeros((37, 53), bool)
    top_left[0, 0] = True
    masks["top_left_pixel"] = top_left
    return masks


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's list form: column-major run lengths, starting with a (maybe empty) 0-run."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


@pytest.mark.parametrize("name", list(_sample_masks()))
def test_coco_rle_round_trip(name: str) -> None:
    mask = _sample_masks()[name]
    rle = encode_rle(mask)
    assert rle["size"] == [mask.shape[0], mask.shape[1]]
    assert isinstance(rle["counts"], str)
    again = json.loads(json.dumps(rle))
    decoded = decode_rle(again)
    assert decoded.dtype == bool and decoded.shape == mask.shape
    assert np.array_equal(decoded, mask)
    assert rle_area(rle) == int(mask.sum())


def test_coco_rle_matches_known_vector() -> None:
    # The 4x6 example verified in the brief (§5.2).
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    rle = encode_rle(mask)
    assert rle == {"size": [4, 6], "counts": "9220003"}
    assert rle_area(rle) == 6
    assert rle_to_bbox(rle) == (2, 1, 5, 3)


@pytest.mark.parametrize("name", list(_sample_masks()))
def test_coco_rle_accepts_bytes_and_list_counts(name: str) -> None:
    mask = _sample_masks()[name]
    rle = encode_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    as_list = {"size": rle["size"], "counts": _uncompressed_counts(mask)}
    assert np.array_equal(decode_rle(as_bytes), mask)
    assert np.array_equal(decode_rle(as_list), mask)
    assert normalize_rle(as_list) == rle
    assert normalize_rle(as_bytes) == rle


def test_encode_accepts_integer_masks() -> None:
    mask = np.zeros((5, 4), np.uint8)
    mask[2, 1] = 255
    assert np.array_equal(decode_rle(encode_rle(mask)), mask > 0)


def test_rle_to_bbox_matches_mask_to_box() -> None:
    for mask in _sample_masks().values():
        assert rle_to_bbox(encode_rle(mask)) == mask_to_box(mask)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "9220003",
        {"counts": "9220003"},
        {"size": [4, 6]},
        {"size": [4], "counts": "9220003"},
        {"size": [0, 6], "counts": ""},
        {"size": [4.0, 6], "counts": "9220003"},
        {"size": [4, 6], "counts": "92200"},  # runs cover fewer pixels than 4x6
        {"size": [2, 2], "counts": "9220003"},  # runs overflow the mask
        {"size": [4, 6], "counts": ""},
        {"size": [4, 6], "counts": "zz~~"},
        {"size": [4, 6], "counts": "9220003\u00e9"},
        {"size": [4, 6], "counts": [9, 2, 2]},
        {"size": [4, 6], "counts": [9, -2, 17]},
        {"size": [4, 6], "counts": [9.0, 15.0]},
        {"size": [4, 6], "counts": 24},
    ],
)
def test_decode_rle_rejects_malformed(bad: object) -> None:
    with pytest.raises(MaskFormatError):
        decode_rle(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 4, 2), bool), np.zeros(5, bool), np.zeros((0, 4), bool), np.zeros((3, 4), np.float32)],
)
def test_encode_rle_rejects_bad_masks(bad: np.ndarray) -> None:
    with pytest.raises(MaskFormatError):
        encode_rle(bad)


@pytest.mark.parametrize("name", list(_sample_masks()))
def test_brush_round_trip(name: str) -> None:
    mask = _sample_masks()[name]
    rle = encode_brush(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in rle)
    h, w = mask.shape
    assert int.from_bytes(bytes(rle[:4]), "big") == h * w * 4
    decoded = decode_brush(json.loads(json.dumps(rle)), h, w)
    assert decoded.dtype == bool and decoded.shape == mask.shape
    assert np.array_equal(decoded, mask)


def test_brush_matches_known_header() -> None:
    # The 4x6 example verified in the brief (§5.1): 18 bytes, count 96 = 4 * 6 * 4.
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    rle = encode_brush(mask)
    assert len(rle) == 18
    assert rle[:4] == [0, 0, 0, 96]


def test_brush_handles_runs_longer_than_16_bits() -> None:
    mask = np.zeros((300, 400), bool)  # 480,000 RGBA values in one run
    mask[150:, 390:] = True
    assert np.array_equal(decode_brush(encode_brush(mask), 300, 400), mask)


def test_brush_rejects_wrong_size_and_garbage() -> None:
    mask = np.ones((4, 6), bool)
    rle = encode_brush(mask)
    with pytest.raises(MaskFormatError, match="4x5"):
        decode_brush(rle, 4, 5)
    with pytest.raises(MaskFormatError):
        decode_brush(rle[:8], 4, 6)
    with pytest.raises(MaskFormatError):
        decode_brush([0, 0, 0], 4, 6)
    with pytest.raises(MaskFormatError):
        decode_brush([*rle[:-1], 256], 4, 6)
    with pytest.raises(MaskFormatError):
        decode_brush("abc", 4, 6)  # type: ignore[arg-type]


def test_mask_to_box_single_pixel() -> None:
    h, w = 37, 53
    mask = np.zeros((h, w), bool)
    mask[10, 20] = True
    assert mask_to_box(mask) == (20, 10, 21, 11)
    box = mask_to_percent_box(mask)
    assert box == pytest.approx({"x": 100 * 20 / w, "y": 100 * 10 / h, "width": 100 / w, "height": 100 / h})


def test_mask_boxes_empty_full_and_border() -> None:
    h, w = 37, 53
    assert mask_to_box(np.zeros((h, w), bool)) is None
    assert mask_to_percent_box(np.zeros((h, w), bool)) is None
    assert mask_to_box(np.ones((h, w), bool)) == (0, 0, w, h)
    assert mask_to_percent_box(np.ones((h, w), bool)) == pytest.approx(
        {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0}
    )
    corner = np.zeros((h, w), bool)
    corner[-3:, -4:] = True
    assert mask_to_box(corner) == (w - 4, h - 3, w, h)
    assert box_to_percent((w - 4, h - 3, w, h), h, w)["x"] + box_to_percent((w - 4, h - 3, w, h), h, w)[
        "width"
    ] == pytest.approx(100.0)
