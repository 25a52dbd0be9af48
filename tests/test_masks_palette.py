"""DAVIS / YouTube-VOS palette PNGs and label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrshq.errors import MaskFormatError
from vrshq.masks import (
    DAVIS_PALETTE,
    labels_from_masks,
    masks_from_labels,
    read_palette_folder,
    read_palette_png,
    write_palette_folder,
    write_palette_png,
)


def test_davis_palette_entries() -> None:
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        5: (128, 0, 128),
        6: (0, 128, 128),
        7: (128, 128, 128),
        8: (64, 0, 0),
        9: (192, 0, 0),
        255: (224, 224, 192),
    }
    for index, rgb in expected.items():
        assert tuple(int(v) for v in DAVIS_PALETTE[index]) == rgb
    assert len({tuple(row) for row in DAVIS_PALETTE.tolist()}) == 256
    with pytest.raises(ValueError):
        DAVIS_PALETTE[1] = 0


def _label_map(h: int = 37, w: int = 53) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[0, :] = 1
    labels[5:20, 10:30] = 2
    labels[-1, -1] = 255
    labels[:, 0] = 7
    return labels


def test_png_round_trip_is_a_palette_image(tmp_path: Path) -> None:
    labels = _label_map()
    path = tmp_path / "00000.png"
    write_palette_png(path, labels)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    again = read_palette_png(path)
    assert again.dtype == np.uint8
    assert np.array_equal(again, labels)


def test_reads_greyscale_and_rejects_rgb(tmp_path: Path) -> None:
    labels = _label_map()
    Image.fromarray(labels).save(tmp_path / "grey.png")
    assert np.array_equal(read_palette_png(tmp_path / "grey.png"), labels)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskFormatError, match="RGB"):
        read_palette_png(tmp_path / "rgb.png")


def test_write_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(MaskFormatError):
        write_palette_png(tmp_path / "x.png", np.zeros((4, 5), np.int32))
    with pytest.raises(MaskFormatError):
        write_palette_png(tmp_path / "x.png", np.zeros((4, 5, 3), np.uint8))


def test_labels_from_masks_higher_id_wins() -> None:
    a = np.zeros((6, 8), bool)
    a[:, :5] = True
    b = np.zeros((6, 8), bool)
    b[:, 3:] = True
    # Mapping order must not matter.
    labels = labels_from_masks({5: b, 2: a}, (6, 8))
    assert labels.dtype == np.uint8
    assert (labels[:, :3] == 2).all() and (labels[:, 3:] == 5).all()
    assert np.array_equal(labels, labels_from_masks({2: a, 5: b}, (6, 8)))


@pytest.mark.parametrize("obj_id", [0, 256, -1, True, 1.0])
def test_labels_from_masks_rejects_bad_ids(obj_id: object) -> None:
    with pytest.raises(MaskFormatError):
        labels_from_masks({obj_id: np.ones((2, 2), bool)}, (2, 2))  # type: ignore[dict-item]


def test_labels_from_masks_rejects_wrong_shape() -> None:
    with pytest.raises(MaskFormatError):
        labels_from_masks({1: np.ones((3, 2), bool)}, (2, 2))


def test_masks_round_trip_through_labels() -> None:
    labels = _label_map()
    masks = masks_from_labels(labels)
    assert sorted(masks) == [1, 2, 7, 255]
    assert all(m.dtype == bool and m.shape == labels.shape for m in masks.values())
    assert np.array_equal(labels_from_masks(masks, labels.shape), labels)
    assert masks_from_labels(np.zeros((3, 3), np.uint8)) == {}


def test_folder_round_trip(tmp_path: Path) -> None:
    frames = [(0, _label_map()), (12, np.zeros((37, 53), np.uint8)), (5, _label_map()[::-1].copy())]
    paths = write_palette_folder(tmp_path / "Annotations" / "vid", frames)
    assert [p.name for p in paths] == ["00000.png", "00012.png", "00005.png"]
    (tmp_path / "Annotations" / "vid" / "notes.txt").write_text("ignored")
    read = list(read_palette_folder(tmp_path / "Annotations" / "vid"))
    assert [f for f, _ in read] == [0, 5, 12]
    expected = dict(frames)
    for frame_idx, labels in read:
        assert np.array_equal(labels, expected[frame_idx])


def test_folder_rejects_bad_names(tmp_path: Path) -> None:
    write_palette_folder(tmp_path, [(3, _label_map())])
    write_palette_png(tmp_path / "mask.png", _label_map())
    with pytest.raises(MaskFormatError, match="mask.png"):
        read_palette_folder(tmp_path)
    with pytest.raises(MaskFormatError):
        read_palette_folder(tmp_path / "missing")
    with pytest.raises(MaskFormatError):
        write_palette_folder(tmp_path, [(-1, _label_map())])
