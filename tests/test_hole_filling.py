"""Hole filling (vrshq.engine.holes) against scipy labelling, and where the engine applies it.

The reference (tests/vrshq_reference.py ``reference_fill``) is written from sam2's definition
(``sam2/utils/misc.py`` ``fill_holes_in_mask_scores``; the kernel
``sam2/csrc/connected_components.cu`` labels with 8-connectivity): background = score <= 0, its 8-connected components of area <= max_area
become 0.1, with no border exclusion. Every comparison is exact (``torch.equal``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.sam2_reference import assert_same_frame, reference_track
from tests.vrshq_reference import reference_fill, reference_labels
from vrshq.engine import EngineConfig, TrackingSession
from vrshq.engine.holes import HOLE_SCORE, SAM2_FILL_HOLE_AREA, fill_holes
from vrshq.model import keyframe as keyframe_module
from vrshq.model.keyframe import NO_OBJ_SCORE, TokenDecode, select_keyframe_with_token
from vrshq.video.reader import open_video
from vrshq.video.transforms import FrameTransform, ResizeMode

FG, BG = 4.0, -4.0


def _canvas(h: int = 32, w: int = 32, value: float = FG) -> torch.Tensor:
    return torch.full((1, 1, h, w), value)


def _filled_pixels(before: torch.Tensor, after: torch.Tensor) -> set[tuple[int, int]]:
    changed = (before != after)[0, 0].nonzero().tolist()
    return {(int(y), int(x)) for y, x in changed}


def _check(mask: torch.Tensor, expected_filled: set[tuple[int, int]],
           max_area: int = SAM2_FILL_HOLE_AREA) -> None:
    out = fill_holes(mask, max_area)
    assert _filled_pixels(mask, out) == expected_filled
    if expected_filled:
        ys, xs = zip(*expected_filled)
        assert bool((out[0, 0, list(ys), list(xs)] == torch.tensor(HOLE_SCORE)).all())
    assert torch.equal(out, reference_fill(mask, max_area))


# ---------------------------------------------------------------- crafted masks


@pytest.mark.parametrize("area", range(1, 13))
def test_hole_of_n_pixels_is_filled_up_to_eight(area):
    # a hole of `area` pixels inside the object, as a snake of rows of 3 (any shape counts)
    mask = _canvas()
    pixels = {(10 + i // 3, 10 + i % 3) for i in range(area)}
    for y, x in pixels:
        mask[0, 0, y, x] = BG
    _check(mask, pixels if area <= 8 else set())


def test_exactly_eight_is_filled_and_nine_is_not():
    mask = _canvas()
    eight = {(3, x) for x in range(4, 12)}
    nine = {(20, x) for x in range(4, 13)}
    for y, x in eight | nine:
        mask[0, 0, y, x] = BG
    _check(mask, eight)
    # the threshold is the caller's: 9 fills both, 7 neither
    _check(mask, eight | nine, max_area=9)
    _check(mask, set(), max_area=7)


def test_zero_is_background_and_nan_is_not():
    # sam2: background is mask <= 0, so 0.0 and -0.0 are holes; NaN is neither
    mask = _canvas()
    mask[0, 0, 5, 5] = 0.0
    mask[0, 0, 5, 20] = -0.0
    mask[0, 0, 20, 20] = float("nan")
    out = fill_holes(mask, 8)
    assert out[0, 0, 5, 5] == HOLE_SCORE and out[0, 0, 5, 20] == HOLE_SCORE
    assert torch.isnan(out[0, 0, 20, 20])
    assert _filled_pixels(mask, out) - {(20, 20)} == {(5, 5), (5, 20)}


def test_small_background_touching_the_border_is_a_hole():
    # sam2's kernel labels every background component: no exclusion at the image edge
    mask = _canvas()
    corner = {(0, 0), (0, 1), (1, 0), (1, 1)}           # 4 px in a corner: filled
    edge = {(0, 15 + i) for i in range(8)}               # 8 px along the top edge: filled
    big_edge = {(31, i) for i in range(5, 14)}           # 9 px along the bottom: kept
    side = {(10 + i, 31) for i in range(3)}              # 3 px on the right edge: filled
    for y, x in corner | edge | big_edge | side:
        mask[0, 0, y, x] = BG
    _check(mask, corner | edge | side)


def test_nested_hole_island_hole():
    mask = _canvas(48, 48)
    # a background ring (7x7 minus 5x5: 24 px, kept) around an object island (5x5) whose
    # centre pixel is a 1-px hole (filled)
    mask[0, 0, 10:17, 10:17] = BG
    mask[0, 0, 11:16, 11:16] = FG
    mask[0, 0, 13, 13] = BG
    # a background ring of 8 px (3x3 minus its centre) around a 1-px island: filled
    mask[0, 0, 30:33, 30:33] = BG
    mask[0, 0, 31, 31] = FG
    ring8 = {(30 + dy, 30 + dx) for dy in range(3) for dx in range(3)} - {(31, 31)}
    # a big background region with an island holding a 9-px hole and a 2-px hole
    mask[0, 0, 36:48, 0:14] = BG
    mask[0, 0, 38:46, 2:12] = FG
    mask[0, 0, 39:42, 3:6] = BG
    mask[0, 0, 43, 8:10] = BG
    _check(mask, {(13, 13)} | ring8 | {(43, 8), (43, 9)})


@pytest.mark.parametrize("anti", [False, True], ids=["diagonal", "anti-diagonal"])
def test_diagonal_contact_joins_background(anti):
    # two 2x3 background blocks (6 px each) touching only at one corner: one 8-connected
    # component of 12 px, kept (4-connectivity would see two 6-px holes and fill both)
    mask = _canvas()
    a = {(8 + y, 8 + x) for y in range(2) for x in range(3)}
    b = {(10 + y, 11 + x) for y in range(2) for x in range(3)}
    if anti:
        a = {(y, 31 - x) for y, x in a}
        b = {(y, 31 - x) for y, x in b}
    for y, x in a | b:
        mask[0, 0, y, x] = BG
    _check(mask, set())
    _check(mask, a | b, max_area=12)
    # either block alone is a 6-px hole
    lone = _canvas()
    for y, x in a:
        lone[0, 0, y, x] = BG
    _check(lone, a)


def test_diagonal_contact_with_the_outer_background():
    # 3 px of background reaching the big background only through a diagonal: not a hole
    mask = _canvas()
    mask[0, 0, :, :7] = BG                       # the outer background: columns 0..6 ...
    mask[0, 0, :3, 7] = BG                       # ... and rows 0..2 of column 7
    pocket = {(3, 8), (3, 9), (3, 10)}           # touches (2, 7) only diagonally
    for y, x in pocket:
        mask[0, 0, y, x] = BG
    _check(mask, set())
    mask[0, 0, 2, 7] = FG                        # cut the diagonal: now a 3-px hole
    _check(mask, pocket)


def test_batch_equals_one_mask_at_a_time():
    g = torch.Generator().manual_seed(1)
    masks = [_canvas() for _ in range(4)]
    masks[0][0, 0, 3:5, 3:5] = BG                        # 4-px hole
    masks[1][0, 0, 3:6, 3:6] = BG                        # 9-px hole, kept
    masks[2][:] = NO_OBJ_SCORE                            # an absent object
    masks[3] = torch.where(torch.rand(1, 1, 32, 32, generator=g) < 0.6, FG, BG)
    batch = torch.cat(masks)
    out = fill_holes(batch, 8)
    assert torch.equal(out, torch.cat([fill_holes(m, 8) for m in masks]))
    assert torch.equal(out, reference_fill(batch, 8))
    assert torch.equal(out[2], batch[2])
    assert (out[0] == HOLE_SCORE).sum() == 4 and not (out[1] == HOLE_SCORE).any()


def test_no_object_mask_is_unchanged():
    mask = torch.full((2, 1, 64, 64), NO_OBJ_SCORE)
    assert torch.equal(fill_holes(mask, 8), mask)


def test_all_background_image_is_one_component():
    # the whole image is background: a hole only if the image itself is small enough
    mask = torch.full((1, 1, 2, 4), BG)
    assert bool((fill_holes(mask, 8) == HOLE_SCORE).all())
    assert torch.equal(fill_holes(mask, 7), mask)
    no_background = torch.full((1, 1, 2, 4), FG)
    assert torch.equal(fill_holes(no_background, 8), no_background)


def test_threshold_zero_is_identity_and_bad_input_raises():
    mask = _canvas()
    mask[0, 0, 4, 4] = BG
    assert fill_holes(mask, 0) is mask
    with pytest.raises(ValueError):
        fill_holes(mask, -1)
    with pytest.raises(ValueError):
        fill_holes(mask[0], 8)
    with pytest.raises(ValueError):
        fill_holes(torch.zeros(1, 3, 8, 8), 8)
    with pytest.raises(ValueError):
        EngineConfig(fill_hole_area=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtype_is_kept_and_the_fill_is_that_dtypes_point_one(dtype):
    mask = _canvas().to(dtype)
    mask[0, 0, 7, 7] = BG
    out = fill_holes(mask, 8)
    assert out.dtype == dtype
    assert out[0, 0, 7, 7] == torch.tensor(0.1, dtype=dtype)
    assert torch.equal(out, reference_fill(mask, 8))


def test_defaults_follow_sam2_and_the_release():
    # sam2/build_sam.py and the fork's _build_sam2_ both set fill_hole_area=8
    assert SAM2_FILL_HOLE_AREA == 8
    assert EngineConfig().fill_hole_area == 8
    from vrshq.model.pipeline import VrshqConfig

    assert VrshqConfig().engine.fill_hole_area == 8


# ---------------------------------------------------------------- random masks vs scipy


def _random_masks(n: int, size: int, density: float, seed: int, smooth: bool) -> torch.Tensor:
    """Random logits, foreground with probability ~density; ``smooth`` gives blobby shapes."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, size, size, generator=g)
    if smooth:  # mask-like blobs with ragged edges and small holes
        noise = F.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
        noise = (noise - noise.mean()) / noise.std() * 0.29 + 0.5
    logits = torch.randn(n, 1, size, size, generator=g).abs() + 0.01
    return torch.where(noise < density, logits, -logits)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("smooth", [False, True], ids=["noise", "blobs"])
def test_random_64px_masks_equal_scipy(density, smooth):
    masks = _random_masks(10, 64, density, seed=int(density * 100) + smooth, smooth=smooth)
    out = fill_holes(masks, 8)
    assert torch.equal(out, reference_fill(masks, 8))
    assert (out != masks).any() or density < 0.5  # the dense masks do have holes


@pytest.mark.parametrize("max_area", [1, 3, 30])
def test_random_masks_other_thresholds(max_area):
    masks = _random_masks(6, 64, 0.7, seed=max_area, smooth=False)
    assert torch.equal(fill_holes(masks, max_area), reference_fill(masks, max_area))


@pytest.mark.parametrize("density", [0.5, 0.7, 0.9])
def test_random_256px_masks_equal_scipy(density):
    masks = torch.cat([_random_masks(1, 256, density, seed=7, smooth=False),
                       _random_masks(1, 256, density, seed=8, smooth=True)])
    assert torch.equal(fill_holes(masks, 8), reference_fill(masks, 8))


def test_odd_sizes_and_a_long_spiral():
    # odd, non-square sizes (sam2's kernel needs even ones; ours does not)
    masks = _random_masks(3, 70, 0.7, seed=3, smooth=False)[..., :63, :]
    assert torch.equal(fill_holes(masks, 8), reference_fill(masks, 8))
    # a one-pixel-wide background serpentine of ~2,000 px, its end in the corner opposite the
    # smallest pixel index: the labelling must run to convergence, not a fixed number of rounds
    size = 64
    grid = np.ones((size, size), dtype=bool)  # True: foreground
    for n, y in enumerate(range(1, size - 1, 2)):
        grid[y, 1:size - 1] = False
        if y + 2 < size - 1:
            grid[y + 1, size - 2 if n % 2 == 0 else 1] = False
    labels, area = reference_labels(~grid)
    assert labels.max() == 1 and area.max() > 1900
    mask = torch.from_numpy(np.where(grid, FG, BG).astype(np.float32))[None, None]
    assert torch.equal(fill_holes(mask, 8), mask)
    filled = fill_holes(mask, 10_000)
    assert torch.equal(filled, reference_fill(mask, 10_000)) and (filled > 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu_and_scipy():
    masks = torch.cat([_random_masks(8, 256, d, seed=11, smooth=s)
                       for d in (0.5, 0.8) for s in (False, True)])
    out = fill_holes(masks.cuda(), 8)
    assert out.is_cuda
    assert torch.equal(out.cpu(), fill_holes(masks, 8))
    assert torch.equal(out.cpu(), reference_fill(masks, 8))


def _sam2_kernel_available() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _sam2_kernel_available(), reason="needs sam2's CUDA extension and a GPU")
def test_equals_sam2s_own_fill_where_its_extension_exists():
    from sam2.utils.misc import fill_holes_in_mask_scores

    masks = torch.cat([_random_masks(8, 256, d, seed=12, smooth=s)
                       for d in (0.5, 0.8) for s in (False, True)]).cuda()
    assert torch.equal(fill_holes(masks, 8), fill_holes_in_mask_scores(masks, 8))


# ---------------------------------------------------------------- where it is applied


Pixels = list[tuple[int, int]]


def _punched(low: torch.Tensor) -> tuple[torch.Tensor, Pixels, Pixels]:
    """``low`` with a foreground ring around an 8-px hole and one around a 16-px hole."""
    low = low.clone()
    low[..., 2:8, 2:10] = FG
    low[..., 4:6, 4:8] = BG
    low[..., 18:26, 18:26] = FG
    low[..., 20:24, 20:24] = BG
    small = [(y, x) for y in (4, 5) for x in range(4, 8)]
    big = [(y, x) for y in range(20, 24) for x in range(20, 24)]
    return low, small, big


@contextlib.contextmanager
def _punching(monkeypatch, model):
    """Every track_step's low-res output gets the two punched holes (memories unchanged)."""
    real = model.track_step

    def track_step(*args, **kwargs):
        out = real(*args, **kwargs)
        out["pred_masks"] = _punched(out["pred_masks"])[0]
        return out

    monkeypatch.setattr(model, "track_step", track_step)
    yield
    monkeypatch.setattr(model, "track_step", real)


def _low_res_by_frame(session: TrackingSession, prompt_frame: int, prompt: np.ndarray):
    first = session.add_mask(1, prompt_frame, prompt)
    out = {prompt_frame: first.low_res_logits}
    for r in session.propagate("both"):
        out[r.frame_idx] = r.objects[1].low_res_logits
    return out


def test_engine_stores_and_returns_filled_logits(tiny_sam2_predictor, jpeg_clip, monkeypatch):
    folder, gt = jpeg_clip
    model = tiny_sam2_predictor
    k = len(gt) // 2
    with _punching(monkeypatch, model):
        no_fill = EngineConfig(fill_hole_area=0)
        with TrackingSession(model, open_video(folder), config=no_fill) as raw:
            unfilled = _low_res_by_frame(raw, k, gt[k] == 1)
        with TrackingSession(model, open_video(folder)) as session:  # default: 8
            filled = _low_res_by_frame(session, k, gt[k] == 1)
            stored = session._objects[1]
            kept = {f: stored.cond[f]["pred_masks"] if f in stored.cond
                    else stored.non_cond.get(f)["pred_masks"] for f in filled}
    _, small, big = _punched(torch.zeros(1, 1, 32, 32))
    assert sorted(filled) == list(range(len(gt)))
    for f, low in filled.items():
        ys, xs = zip(*small)
        assert bool((low[0, 0, list(ys), list(xs)] == HOLE_SCORE).all()), f
        ys, xs = zip(*big)
        assert bool((low[0, 0, list(ys), list(xs)] == BG).all()), f
        assert torch.equal(low, fill_holes(low, 8)), f
        assert torch.equal(kept[f].float().cpu(), low), f
        assert bool((unfilled[f][0, 0, 4:6, 4:8] == BG).all()), f
    # the prompted frame: same decode, filled (its memory is encoded from the filled mask)
    assert torch.equal(filled[k], fill_holes(unfilled[k], 8))


def test_engine_with_filling_equals_sam2_with_filling(tiny_sam2_predictor, jpeg_clip,
                                                      monkeypatch):
    """sam2's predictor with fill_hole_area=8 and scipy in place of its missing CUDA kernel."""
    import sam2.utils.misc as sam2_misc

    def connected_components(binary: torch.Tensor):
        # sam2's kernel API: (labels, areas) as int32 [N, 1, H, W], 0 off the input's ones
        labels, areas = zip(*(reference_labels(b[0].cpu().numpy().astype(bool)) for b in binary))

        def as_tensor(xs):
            return torch.from_numpy(np.stack(xs)[:, None].astype(np.int32))

        return as_tensor(labels), as_tensor(areas)

    folder, gt = jpeg_clip
    model = tiny_sam2_predictor
    k = len(gt) // 2
    monkeypatch.setattr(sam2_misc, "get_connected_components", connected_components)
    monkeypatch.setattr(model, "fill_hole_area", 8)
    with _punching(monkeypatch, model):
        ref = reference_track(model, str(folder), [(k, gt[k] == 1)])
        with TrackingSession(model, open_video(folder)) as session:
            session.add_mask(1, k, gt[k] == 1)
            ours = {r.frame_idx: r.objects[1] for r in session.propagate("both")}
    assert sorted(ours) == sorted(ref) == list(range(len(gt)))
    # same ops on the same CPU: bit-identical (measured 0.0), as every parity test. A prompted
    # frame's memory encoded from its unfilled mask shifts the later frames by only ~4e-5 on
    # the tiny model, which no tolerance above that would see.
    for f in ref:
        assert_same_frame(ours[f], ref[f], f"frame {f}")


class _Features:
    """The two FeatureCache methods select_keyframe_with_token uses."""

    def get(self, frame_idx: int):
        return frame_idx

    def autocast(self):
        return contextlib.nullcontext()


def test_keyframe_decode_is_filled_before_it_becomes_the_mask_prompt(monkeypatch):
    low = torch.full((1, 1, 32, 32), BG)
    low, small, big = _punched(low)
    scores = {0: -1.0, 3: 2.0, 6: 0.5}

    def decode(model, frame_idx, token):
        return TokenDecode(low.clone(), torch.tensor([[scores[frame_idx]]]), torch.ones(1, 1))

    monkeypatch.setattr(keyframe_module, "decode_with_token", decode)
    lam = torch.zeros(3)
    choice = select_keyframe_with_token(None, _Features(), [0, 3, 6], torch.zeros(4), lam)
    raw = select_keyframe_with_token(None, _Features(), [0, 3, 6], torch.zeros(4), lam,
                                     fill_hole_area=0)
    assert choice.keyframe == raw.keyframe == 3
    assert torch.equal(raw.low_res_logits, low)
    assert torch.equal(choice.low_res_logits, fill_holes(low, 8))
    assert bool((choice.low_res_logits[0, 0, 4:6, 4:8] == HOLE_SCORE).all())
    # the binarised keyframe mask (what add_mask / add_model_mask gets) has the hole closed
    transform = FrameTransform(ResizeMode.SAM2, 128)
    mask, plain = choice.mask(transform, (128, 128)), raw.mask(transform, (128, 128))
    assert not plain[18, 18] and mask[18, 18]  # the small hole's centre at 4x
    assert not mask[88, 88] and not plain[88, 88]  # the 16-px hole stays open
