"""Brush results saved as strokes (``touches``) without ``rle``: what Label Studio 1.23.2 stores for a
region restored from an autosaved draft on a page that was not shown again before the save (seen in
the real editor while building tests/test_whole_loop_browser.py; the backend answered the whole
webhook 400 "brush RLE is too short"). ``vrshq.masks.decode_touches`` draws them.

The reference is Label Studio's own rasterization of the same mouse path, recorded from the
browser: a drag along picture row 60 from x 40 to x 200 with the default 15 px brush at a stage
scale of 2.5333 was saved as the touch below, and (drawn with the page shown) as an RLE whose
pixels are rows 57..63, columns 37..203, 1162 pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from vrshq.backend.labelstudio.labelconfig import parse_label_config
from vrshq.backend.labelstudio.predictions import parse_annotation
from vrshq.errors import MaskFormatError
from vrshq.masks import decode_touches, encode_brush
from tests.backend_fixtures import TEXT_XML

H, W = 240, 320
XS = [12.613784135240572, 15.084525357607282, 17.555266579973992, 20.156046814044213, 22.62678803641092,
      25.097529258777634, 27.568270481144342, 30.169050715214563, 32.63979193758127, 35.110533159947984,
      37.581274382314696, 40.18205461638492, 42.65279583875163, 45.123537061118334, 47.594278283485046,
      50.06501950585176, 52.53576072821846, 55.006501950585175, 57.607282184655396, 60.07802340702211,
      62.54876462938882, 62.54876462938882]
SEEN = {"type": "add", "relativePoints": [v for x in XS for v in (x, 25.140875596012137)],
        "strokeWidth": 15, "relativeStrokeWidth": 1.950585175552666}


def test_a_recorded_stroke_is_drawn_where_label_studio_draws_it():
    mask = decode_touches([SEEN], H, W)
    ys, xs = np.nonzero(mask)
    # Label Studio: rows 57..63, columns 37..203, 1162 pixels; anti-aliased edges make a one
    # pixel difference at the border a matter of rounding, not of place.
    assert abs(ys.min() - 57) <= 1 and abs(ys.max() - 63) <= 1, (ys.min(), ys.max())
    assert abs(xs.min() - 37) <= 1 and abs(xs.max() - 203) <= 1, (xs.min(), xs.max())
    assert abs(int(mask.sum()) - 1162) <= 0.05 * 1162, int(mask.sum())
    # and the centre line (row 60, columns 41..199) is all painted
    assert mask[60, 41:200].all() and mask[58:63, 60].all()


def test_touches_go_over_the_rle_in_order_and_the_eraser_clears():
    base = np.zeros((H, W), bool)
    base[100:140, 100:140] = True
    add = {"type": "add", "relativePoints": [10, 10, 20, 10], "relativeStrokeWidth": 2}
    erase = {"type": "eraser", "relativePoints": [50 * 100 / W, 0, 50 * 100 / W, 100],
             "relativeStrokeWidth": 10 * 100 / W}
    mask = decode_touches([add, erase], H, W, base)
    assert mask[24, 33:44].all() and mask[24, 57:63].all()  # the added stroke (row 24, x 32..64)
    assert not mask[:, 46:55].any() and mask[120, 100:140].sum() == 40  # erased band; base intact
    region = {"from_name": "mask", "to_name": "keyframes", "type": "brushlabels", "id": "vrshq-7-1-mask-f3",
              "original_width": W, "original_height": H, "item_index": 2,
              "value": {"format": "rle", "rle": encode_brush(base), "touches": [add],
                        "brushlabels": ["Object"]}}
    parsed = parse_annotation([region], parse_label_config(TEXT_XML))
    assert np.array_equal(parsed["vrshq-7-1"].pages[2], decode_touches([add], H, W, base))
    del region["value"]["rle"]  # a touches-only result: a mask, not "brush RLE is too short"
    parsed = parse_annotation([region], parse_label_config(TEXT_XML))
    assert np.array_equal(parsed["vrshq-7-1"].pages[2], decode_touches([add], H, W))


@pytest.mark.parametrize("touch", [{"type": "add"}, {"relativePoints": [1, 2, 3], "relativeStrokeWidth": 1},
                                   {"relativePoints": [1, "a"], "relativeStrokeWidth": 1}, "x"])
def test_a_malformed_touch_is_a_mask_format_error(touch):
    with pytest.raises(MaskFormatError, match="touch"):
        decode_touches([touch], H, W)
