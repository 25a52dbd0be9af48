"""COCO RLE, Label Studio brush RLE and mask boxes: round trips and malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.converter import brush as ls_brush

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


# --- brush RLE against label-studio-sdk's converter and the documented bit format ---------------
#
# label_studio_sdk.converter.brush is Label Studio's own Python codec (its docstring quotes the
# frontend's decoder, thi-ng rle-pack). The stream: a 32-bit count of values (RGBA, 4 per pixel),
# a 5-bit word size - 1, four 4-bit run-length field sizes - 1; then runs: 1 bit (1 = one value
# repeated, 0 = literal values), 2 bits choosing a field size, the run length - 1 in that many
# bits, then the value(s) in word-size bits each. Our masks are RGBA with every channel 0 or 255.


def _reference_masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    masks = dict(_sample_masks())
    masks["random_big"] = rng.random((61, 83)) < 0.3
    masks["blobs"] = np.kron(rng.random((8, 12)) < 0.5, np.ones((9, 7), bool))[:70, :80]
    masks["checker"] = (np.indices((17, 23)).sum(axis=0) % 2).astype(bool)
    masks["long_runs"] = np.zeros((300, 400), bool)
    masks["long_runs"][150:, 390:] = True  # runs over 2**16 values: the 16-bit field repeats
    masks["non_square"] = np.zeros((3, 50), bool)
    masks["non_square"][1, 7:40] = True  # a transposed or Fortran-order codec would misplace it
    return masks


REFERENCE = _reference_masks()


@pytest.mark.parametrize("name", list(REFERENCE))
def test_brush_encoding_is_label_studios_both_ways(name: str) -> None:
    mask = REFERENCE[name]
    h, w = mask.shape
    ours = encode_brush(mask)
    # Label Studio's encoder, called the way its docs show for a 0/255 mask, gives the same bytes.
    theirs = [int(b) for b in ls_brush.encode_rle(np.repeat(mask.astype(np.uint8).ravel() * 255, 4))]
    assert ours == theirs
    # Label Studio's decoder reads our bytes: row-major pixels, all four channels 255 on the mask.
    rgba = ls_brush.decode_rle(bytes(ours)).reshape(h, w, 4)
    assert np.array_equal(rgba, np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, axis=2))
    # And ours reads what Label Studio's converter writes for a mask (mask2rle; image2rle's 0/255).
    assert np.array_equal(decode_brush(ls_brush.mask2rle(mask.astype(np.uint8) * 255), h, w), mask)
    assert np.array_equal(decode_brush(ls_brush.mask2rle(mask.astype(np.uint8)), h, w), mask)


def test_brush_decoding_reads_the_alpha_channel_of_any_colour() -> None:
    # What an editor-drawn brush can hold: colour in R, G, B and a partial alpha. Only alpha counts.
    mask = REFERENCE["random"]
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[mask] = (0, 255, 0, 100)  # the converter's contour2rle colour
    rgba[~mask] = (200, 10, 10, 0)  # colour under zero alpha is not a mask pixel
    rle = ls_brush.encode_rle(rgba.ravel())
    assert np.array_equal(decode_brush(rle, h, w), mask)


def _bits(value: int, size: int) -> str:
    assert 0 <= value < 2**size, (value, size)
    return format(value, f"0{size}b")


def _pack(values: np.ndarray, word: int, sizes: tuple[int, int, int, int]) -> list[int]:
    """An encoder of the documented format written for this test, with choices Label Studio's
    Python encoder never makes: literal runs of several values, other field sizes and word sizes."""
    bits = [_bits(len(values), 32), _bits(word - 1, 5), *(_bits(s - 1, 4) for s in sizes)]
    i, n = 0, len(values)
    while i < n:
        j = i
        while j + 1 < n and values[j + 1] == values[i] and j + 1 - i < 2 ** max(sizes) - 1:
            j += 1
        if j > i:  # a repeat run of values[i .. j]
            length = j - i + 1
            k = next(k for k, s in enumerate(sizes) if length - 1 < 2**s)
            bits += ["1", _bits(k, 2), _bits(length - 1, sizes[k]), _bits(int(values[i]), word)]
            i = j + 1
        else:  # a literal run up to the next repeat (at most the smallest field's length)
            j = i + 1
            while j < n and values[j] != values[j - 1] and j - i < 2 ** sizes[0]:
                j += 1
            if j < n and values[j] == values[j - 1] and j - 1 > i:
                j -= 1
            length = j - i
            bits += ["0", _bits(0, 2), _bits(length - 1, sizes[0])]
            bits += [_bits(int(v), word) for v in values[i:j]]
            i = j
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k:k + 8], 2) for k in range(0, len(stream), 8)]


@pytest.mark.parametrize(("word", "sizes"), [(8, (3, 4, 8, 16)), (8, (2, 5, 9, 16)), (4, (4, 4, 8, 12))])
@pytest.mark.parametrize("name", ["random", "checker", "blobs", "single_row", "top_left_pixel"])
def test_brush_decoding_follows_the_format_not_one_encoder(name: str, word: int, sizes) -> None:
    mask = REFERENCE[name]
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.int64)
    rgba[..., 0] = np.arange(h * w).reshape(h, w) % 7  # literal runs in the colour channels
    rgba[..., 3] = mask * (2**word - 1)
    values = rgba.ravel()
    stream = _pack(values, word, sizes)
    # The hand encoder is right by Label Studio's own decoder.
    assert np.array_equal(ls_brush.decode_rle(bytes(stream)), values.astype(np.uint8))
    assert np.array_equal(decode_brush(stream, h, w), mask)


def test_brush_words_wider_than_a_byte_are_refused_clearly() -> None:
    # The editor's canvas holds bytes (Label Studio writes word size 8); a 9..32-bit word cannot be
    # an RGBA value, and Label Studio's decoder overflows on it: a MaskFormatError, never a crash.
    mask = REFERENCE["random"]
    h, w = mask.shape
    values = np.repeat(mask.ravel().astype(np.int64) * 511, 4)
    with pytest.raises(MaskFormatError, match="word size 9"):
        decode_brush(_pack(values, 9, (4, 4, 8, 12)), h, w)


def test_brush_matches_a_hand_worked_stream() -> None:
    # A 1x2 mask [off, on]: values 0,0,0,0,255,255,255,255 -> two repeat runs of 4 (field 0, 3 bits).
    # 32-bit count 8 | word 8 - 1 = 00111 | sizes 3,4,8,16 - 1 = 0010 0011 0111 1111 |
    # run: 1 00 011 00000000 | run: 1 00 011 11111111 | pad to a byte.
    bits = ("00000000000000000000000000001000" "00111" "0010" "0011" "0111" "1111"
            "100011" "00000000" "100011" "11111111")
    bits += "0" * (-len(bits) % 8)
    want = [int(bits[k:k + 8], 2) for k in range(0, len(bits), 8)]
    mask = np.array([[False, True]])
    assert encode_brush(mask) == want
    assert np.array_equal(decode_brush(want, 1, 2), mask)


@pytest.mark.parametrize("pixels", [1, 2, 16383, 16384, 16385, 32768, 32769, 65536, 120000])
def test_brush_encoding_is_label_studios_on_long_runs_and_whole_byte_streams(pixels: int) -> None:
    # Runs past 2**16 RGBA values are cut into full tokens and a rest that keeps the 16-bit
    # field; a stream ending on a byte boundary still gets a zero byte: as Label Studio's SDK.
    for mask in (np.arange(2 * pixels).reshape(2, pixels) < pixels,
                 np.arange(2 * pixels).reshape(2, pixels) >= pixels - 1,
                 np.ones((1, pixels), bool)):
        assert encode_brush(mask) == [int(b) for b in ls_brush.mask2rle(mask.astype(np.uint8) * 255)]


def test_brush_encoding_is_label_studios_on_noisy_masks() -> None:
    # Many short runs (an untrained model's speckle): every run length 4..1024 RGBA values.
    rng = np.random.default_rng(3)
    for p in (0.02, 0.5, 0.97):
        mask = rng.random((61, 83)) < p
        assert encode_brush(mask) == [int(b) for b in ls_brush.mask2rle(mask.astype(np.uint8) * 255)]


def test_rle_checks_remembered_per_string_still_check_the_size() -> None:
    # The run totals are kept per counts string (vrshq.masks.rle): the same string under a
    # wrong size is still refused after it was read under the right one, short or long.
    rng = np.random.default_rng(11)
    for shape in ((37, 53), (400, 600)):
        rle = encode_rle(rng.random(shape) < 0.5)
        assert np.array_equal(decode_rle(rle), decode_rle(dict(rle)))
        for _ in range(2):
            with pytest.raises(MaskFormatError, match="runs cover"):
                decode_rle({"size": [shape[0], shape[1] + 1], "counts": rle["counts"]})
            with pytest.raises(MaskFormatError):
                decode_rle({"size": list(shape), "counts": rle["counts"][:-1]})
