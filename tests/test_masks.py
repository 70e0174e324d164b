"""Tests for ID mask files and mask modes (original, binary, position)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sst_desktop.data import masks
from sst_desktop.errors import MaskError


def blank(width: int = 100, height: int = 80) -> np.ndarray:
    return np.zeros((height, width), dtype=np.uint8)


def box(mask: np.ndarray, oid: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Paint object `oid` over columns x0..x1-1 and rows y0..y1-1."""
    mask[y0:y1, x0:x1] = oid
    return mask


# --- files -------------------------------------------------------------------------------------


def test_write_then_read_roundtrip_as_8bit_L_png(tmp_path):
    mask = blank()
    box(mask, 1, 5, 5, 20, 20)
    box(mask, 255, 50, 40, 60, 70)
    path = masks.write_mask(tmp_path / "sub" / "m.png", mask)

    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "L"
        assert im.palette is None
        assert im.size == (100, 80)
    back = masks.read_mask(path, expected_size=(100, 80))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)
    assert not list((tmp_path / "sub").glob(".*.tmp"))


def test_write_mask_is_atomic_when_the_mask_is_invalid(tmp_path):
    path = tmp_path / "m.png"
    good = box(blank(), 3, 0, 0, 10, 10)
    masks.write_mask(path, good)
    before = path.read_bytes()
    bad = np.full((80, 100), 300, dtype=np.int32)
    with pytest.raises(MaskError):
        masks.write_mask(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]


def test_wrong_size_names_file_and_both_sizes(tmp_path):
    path = masks.write_mask(tmp_path / "frame7.png", blank(100, 80))
    with pytest.raises(MaskError, match=r"frame7\.png is 100x80 but its image is 80x100"):
        masks.read_mask(path, expected_size=(80, 100))


def test_palette_and_16bit_and_bilevel_pngs_read_as_ids(tmp_path):
    ids = box(blank(), 2, 10, 10, 30, 30)
    box(ids, 7, 60, 10, 90, 30)

    p = Image.fromarray(ids, mode="L").convert("P")
    p.putpalette([v for i in range(256) for v in (i * 3 % 256, 0, 255 - i)])
    p.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(masks.read_mask(tmp_path / "pal.png"), ids)

    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(masks.read_mask(tmp_path / "m16.png"), ids)

    Image.fromarray(ids > 0).save(tmp_path / "bilevel.png")
    np.testing.assert_array_equal(
        masks.read_mask(tmp_path / "bilevel.png"), (ids > 0).astype(np.uint8)
    )


def test_16bit_png_with_ids_over_255_is_an_error(tmp_path):
    ids = np.zeros((20, 20), dtype=np.uint16)
    ids[0, 0] = 1000
    Image.fromarray(ids).save(tmp_path / "big_ids.png")
    with pytest.raises(MaskError, match=r"big_ids\.png has IDs outside 1\.\.255"):
        masks.read_mask(tmp_path / "big_ids.png")


def test_rgb_mask_is_an_error_naming_the_file(tmp_path):
    Image.new("RGB", (10, 10), (1, 1, 1)).save(tmp_path / "colour.png")
    with pytest.raises(MaskError, match=r"colour\.png is a colour \(RGB\) image"):
        masks.read_mask(tmp_path / "colour.png")


def test_missing_and_corrupt_mask_files(tmp_path):
    with pytest.raises(MaskError, match=r"not found: .*gone\.png"):
        masks.read_mask(tmp_path / "gone.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(MaskError, match=r"junk\.png"):
        masks.read_mask(tmp_path / "junk.png")
    full = masks.write_mask(
        tmp_path / "full.png", np.arange(256 * 64, dtype=np.uint16).reshape(128, 128) % 251
    )
    data = full.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskError, match=r"cut\.png"):
        masks.read_mask(tmp_path / "cut.png")


# --- arrays ------------------------------------------------------------------------------------


def test_to_id_mask_accepts_ids_and_rejects_the_rest():
    assert masks.to_id_mask(np.array([[0, 1], [2, 255]], dtype=np.int64)).dtype == np.uint8
    assert masks.to_id_mask(np.array([[True, False]])).tolist() == [[1, 0]]
    assert masks.to_id_mask(np.array([[0.0, 3.0]])).tolist() == [[0, 3]]
    assert masks.to_id_mask(np.zeros((4, 5, 1), dtype=np.uint8)).shape == (4, 5)

    with pytest.raises(MaskError, match="300 object IDs; an 8-bit mask holds at most 255"):
        masks.to_id_mask(np.arange(1, 301).reshape(15, 20))
    with pytest.raises(MaskError, match=r"outside 1\.\.255 \(min -1"):
        masks.to_id_mask(np.array([[-1, 0]]))
    with pytest.raises(MaskError, match="max 256"):
        masks.to_id_mask(np.array([[256, 0]]))
    with pytest.raises(MaskError, match="non-integer"):
        masks.to_id_mask(np.array([[0.5]]))
    with pytest.raises(MaskError, match="2-D"):
        masks.to_id_mask(np.zeros((2, 2, 3)))


def test_object_ids():
    mask = blank()
    assert masks.object_ids(mask) == []
    box(mask, 9, 0, 0, 2, 2)
    box(mask, 1, 5, 5, 6, 6)
    box(mask, 255, 50, 50, 51, 51)
    assert masks.object_ids(mask) == [1, 9, 255]


# --- mask modes --------------------------------------------------------------------------------


def test_original_and_binary_modes():
    mask = box(blank(), 4, 10, 10, 20, 20)
    box(mask, 9, 50, 50, 60, 60)
    np.testing.assert_array_equal(masks.apply_mask_mode(mask, "original"), mask)
    binary = masks.apply_mask_mode(mask, "binary")
    assert binary.dtype == np.uint8
    assert set(np.unique(binary)) == {0, 1}
    np.testing.assert_array_equal(binary > 0, mask > 0)
    with pytest.raises(MaskError, match="Unknown mask mode 'quadrant'"):
        masks.apply_mask_mode(mask, "quadrant")


def test_position_four_objects_get_quadrant_ids():
    mask = blank(100, 80)
    box(mask, 11, 60, 50, 70, 60)  # bottom-right
    box(mask, 12, 10, 10, 20, 20)  # top-left
    box(mask, 13, 10, 50, 20, 60)  # bottom-left
    box(mask, 14, 60, 10, 70, 20)  # top-right
    out = masks.apply_mask_mode(mask, "position")
    assert out[15, 15] == 1 and out[15, 65] == 2 and out[55, 15] == 3 and out[55, 65] == 4
    np.testing.assert_array_equal(out > 0, mask > 0)


def test_position_two_objects_in_bottom_half_become_3_and_4():
    # The real case from the SST datasets: both objects below the image centre.
    mask = blank(200, 100)
    box(mask, 1, 120, 60, 180, 95)  # bottom right, labelled 1
    box(mask, 2, 20, 55, 80, 90)  # bottom left, labelled 2
    out = masks.apply_mask_mode(mask, "position")
    assert masks.object_ids(out) == [3, 4]
    assert out[70, 50] == 3 and out[70, 150] == 4


def test_position_two_objects_in_right_half_become_2_and_4():
    mask = blank(200, 100)
    box(mask, 5, 120, 10, 150, 30)
    box(mask, 6, 160, 60, 190, 90)
    out = masks.apply_mask_mode(mask, "position")
    assert out[20, 130] == 2 and out[70, 170] == 4


def test_position_two_objects_straddling_both_axes_split_at_their_mean():
    # Neither axis has all objects on one side of the image centre, so both split at the mean.
    mask = blank(100, 100)
    box(mask, 1, 30, 30, 45, 45)  # centroid (37.5, 37.5)
    box(mask, 2, 60, 55, 70, 75)  # centroid (65, 65)
    out = masks.apply_mask_mode(mask, "position")
    assert out[35, 35] == 1 and out[60, 65] == 4


def test_position_single_object_splits_at_image_centre():
    for (x0, y0), expected in {(5, 5): 1, (70, 5): 2, (5, 60): 3, (70, 60): 4}.items():
        mask = box(blank(100, 80), 42, x0, y0, x0 + 10, y0 + 10)
        out = masks.apply_mask_mode(mask, "position")
        assert masks.object_ids(out) == [expected], (x0, y0)


def test_position_centre_is_the_bounding_box_centre_in_pixel_indices():
    mask = box(blank(100, 80), 1, 5, 5, 15, 15)  # columns and rows 5..14
    assert masks.object_centres(mask) == {1: (9.5, 9.5)}
    mask[50, 30] = 2  # a single pixel sits at its own index
    mask[20:31, 10:91] = 3  # columns 10..90, rows 20..30
    assert masks.object_centres(mask) == {1: (9.5, 9.5), 2: (30.0, 50.0), 3: (50.0, 25.0)}


def test_position_single_11px_blob_on_the_image_centre_is_refused():
    # Pixels 45..55 of a 100x100 image: bounding-box centre (50, 50), on both split lines.
    mask = box(blank(100, 100), 1, 45, 45, 56, 56)
    with pytest.raises(
        MaskError, match=r"cannot place object 1: its bounding-box centre \(50, 50\) lies on"
    ):
        masks.apply_mask_mode(mask, "position", name="f1")


def test_position_single_10px_blob_just_left_and_above_the_centre_is_top_left():
    # Pixels 45..54: centre 49.5 < 50 on both axes (a pixel mean plus half a pixel would be 50).
    mask = box(blank(100, 100), 7, 45, 45, 55, 55)
    assert masks.object_ids(masks.apply_mask_mode(mask, "position")) == [1]


def test_position_two_10px_wide_blobs_above_each_other_are_1_and_3():
    # Columns 45..54 (centre x 49.5, left of the image centre for both): x splits at 50.
    mask = blank(100, 100)
    box(mask, 1, 45, 15, 55, 25)
    box(mask, 2, 45, 75, 55, 85)
    out = masks.apply_mask_mode(mask, "position")
    assert out[20, 50] == 1 and out[80, 50] == 3
    assert masks.object_ids(out) == [1, 3]


def test_position_two_10px_tall_blobs_side_by_side_are_1_and_2():
    # Rows 45..54 (centre y 49.5, above the image centre for both): y splits at 50.
    mask = blank(100, 100)
    box(mask, 1, 15, 45, 25, 55)
    box(mask, 2, 75, 45, 85, 55)
    out = masks.apply_mask_mode(mask, "position")
    assert out[50, 20] == 1 and out[50, 80] == 2


def test_position_two_blobs_centred_on_the_mean_split_are_refused():
    # Rows 45..55: both centres are y = 50, neither above nor below the image centre, so y splits
    # at their mean, 50, and both centres lie on it.
    mask = blank(100, 100)
    box(mask, 1, 15, 45, 25, 56)
    box(mask, 2, 75, 45, 85, 56)
    with pytest.raises(MaskError, match=r"object 1: its bounding-box centre \(19.5, 50\)"):
        masks.apply_mask_mode(mask, "position")
    # The same on the x axis.
    mask = blank(100, 100)
    box(mask, 1, 45, 15, 56, 25)
    box(mask, 2, 45, 75, 56, 85)
    with pytest.raises(MaskError, match=r"split line \(x=50, y=49.5\)"):
        masks.apply_mask_mode(mask, "position")


def _pixel_mean_x(mask: np.ndarray, oid: int) -> float:
    return float(np.nonzero(mask == oid)[1].mean())


def test_position_irregular_shape_uses_the_box_centre_not_the_pixel_mean():
    # A heavy block right of the image centre with a one-pixel foot at the far left edge: the
    # pixel mean is right of x = 50, the bounding-box centre (columns 0..74) left of it.
    mask = blank(100, 80)
    mask[10:30, 55:75] = 1
    mask[35, 0] = 1
    assert _pixel_mean_x(mask, 1) > 60
    assert masks.object_centres(mask) == {1: (37.0, 22.5)}
    assert masks.object_ids(masks.apply_mask_mode(mask, "position")) == [1]  # top-left, not 2


def test_position_irregular_wings_where_the_two_centres_disagree():
    # Three wing-like shapes. Wing 2 is a block with a long thin edge to the right: its pixels lie
    # mostly left of the image centre (x = 100), its bounding box (columns 60..189) right of it.
    mask = blank(200, 100)
    mask[10:40, 10:40] = 1
    mask[10:40, 60:90] = 2
    mask[10, 90:190] = 2
    mask[60:90, 40:80] = 3
    assert masks.object_centres(mask) == {1: (24.5, 24.5), 2: (124.5, 24.5), 3: (59.5, 74.5)}
    assert _pixel_mean_x(mask, 2) < 100  # by pixel means, x would split at the image centre and
    # wings 1 and 2 would collide top-left; by box centres x splits at their mean, 69.5.
    out = masks.apply_mask_mode(mask, "position")
    assert out[20, 20] == 1 and out[20, 70] == 2 and out[10, 180] == 2 and out[70, 50] == 3
    assert masks.object_ids(out) == [1, 2, 3]


def test_position_three_objects():
    mask = blank(120, 120)
    box(mask, 1, 10, 10, 30, 30)
    box(mask, 2, 90, 10, 110, 30)
    box(mask, 3, 50, 90, 70, 110)  # box centre x = 59.5 = mean of the x centres (19.5, 99.5)
    with pytest.raises(MaskError, match="lies on the quadrant split line"):
        masks.apply_mask_mode(mask, "position")
    mask[90:110, 50:70] = 0
    box(mask, 3, 10, 90, 30, 110)
    out = masks.apply_mask_mode(mask, "position")
    assert out[20, 20] == 1 and out[20, 100] == 2 and out[100, 20] == 3


def test_position_collision_is_a_clear_error():
    mask = blank(100, 100)
    box(mask, 1, 5, 5, 15, 15)
    box(mask, 2, 20, 5, 30, 15)  # also top-left once the x-axis splits at the mean (46.25)
    box(mask, 3, 70, 5, 80, 15)
    box(mask, 4, 70, 70, 80, 80)
    with pytest.raises(
        MaskError, match=r"frame 12: .*objects 1 and 2 both in the top-left quadrant"
    ):
        masks.apply_mask_mode(mask, "position", name="frame 12")


def test_position_single_object_on_the_centre_line_is_an_error():
    mask = box(blank(100, 80), 1, 45, 5, 56, 15)  # columns 45..55: centre x = 50 = image centre
    with pytest.raises(MaskError, match="split line"):
        masks.apply_mask_mode(mask, "position")


def test_position_more_than_four_objects_is_an_error():
    mask = blank()
    for i in range(5):
        box(mask, i + 1, i * 15, 0, i * 15 + 10, 10)
    with pytest.raises(MaskError, match="at most 4 objects, found 5"):
        masks.apply_mask_mode(mask, "position")


def test_position_empty_mask_stays_empty():
    out = masks.apply_mask_mode(blank(), "position")
    assert out.shape == (80, 100) and not out.any()


@pytest.mark.parametrize(
    ("blobs", "expected"),
    [
        # four objects in clear quadrants: x and y split at the mean of the centres
        (
            {1: (5, 5, 15, 15), 2: (85, 10, 95, 20), 3: (7, 75, 17, 85), 4: (83, 80, 93, 90)},
            {1: 1, 2: 2, 3: 3, 4: 4},
        ),
        # two objects on a diagonal
        ({1: (5, 15, 15, 25), 2: (75, 65, 85, 75)}, {1: 1, 2: 4}),
        # side by side, one a row lower: y centres 49.5 and 50.5 straddle 50, split at their mean
        ({1: (15, 45, 25, 55), 2: (75, 46, 85, 56)}, {1: 1, 2: 4}),
        # three objects, one quadrant empty
        ({1: (15, 15, 25, 25), 2: (75, 15, 85, 25), 3: (55, 75, 65, 85)}, {1: 1, 2: 2, 3: 4}),
        # a single object in each corner region
        ({9: (75, 75, 85, 85)}, {9: 4}),
        ({9: (15, 15, 25, 25)}, {9: 1}),
    ],
)
def test_position_ids_of_rectangles(blobs, expected):
    mask = blank(100, 100)
    for oid, (x0, y0, x1, y1) in blobs.items():
        box(mask, oid, x0, y0, x1, y1)
    out = masks.apply_mask_mode(mask, "position")
    for oid, quadrant in expected.items():
        assert set(np.unique(out[mask == oid]).tolist()) == {quadrant}, oid


def test_nearest_scaling_takes_the_pixel_under_each_output_centre():
    ids = np.arange(1, 7, dtype=np.uint8).reshape(2, 3)  # 3 wide, 2 high, every pixel its own ID
    assert masks.resize_nearest(ids, 6, 4).tolist() == [
        [1, 1, 2, 2, 3, 3],
        [1, 1, 2, 2, 3, 3],
        [4, 4, 5, 5, 6, 6],
        [4, 4, 5, 5, 6, 6],
    ]
    assert masks.resize_nearest(ids, 1, 1).tolist() == [[5]]  # the centre pixel, never a blend
    big = np.zeros((512, 768), dtype=np.uint8)
    big[100:400, 200:600] = 7
    small = masks.shrink_to_fit(big, 96)
    assert small.shape == (64, 96) and set(np.unique(small)) == {0, 7}
    assert small[32, 48] == 7 and small[5, 5] == 0
    assert masks.shrink_to_fit(big, 0) is big and masks.shrink_to_fit(big, 1000) is big
    assert masks.fit_size(768, 512, 96) == (96, 64) and masks.fit_size(10, 1000, 50) == (1, 50)
