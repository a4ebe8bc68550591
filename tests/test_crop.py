"""app.crop: the square crop shared by training and the app."""
import numpy as np
import pytest

from app.crop import CropBox, box_around, crop_color, crop_depth, crop_mask


def test_box_around_is_square_centred_with_margin():
    box = box_around((100, 50, 140, 250), out_size=128, margin=1.25)
    assert box.side == pytest.approx(250.0)
    assert box.center == pytest.approx((120.0, 150.0))
    assert box.scale == pytest.approx(128 / 250)


def test_point_maps_round_trip_and_normalized_frame():
    box = CropBox(x0=10.0, y0=20.0, side=200.0, out_size=100)
    pts = np.array([[10.0, 20.0], [110.0, 120.0], [210.0, 220.0]])
    crop = box.source_to_crop(pts)
    np.testing.assert_allclose(crop, [[0, 0], [50, 50], [100, 100]])
    np.testing.assert_allclose(box.crop_to_source(crop), pts)
    np.testing.assert_allclose(box.source_to_normalized(pts), [[-1, -1], [0, 0], [1, 1]])
    np.testing.assert_allclose(box.normalized_to_source(box.source_to_normalized(pts)), pts)


def test_crop_samples_the_right_pixels():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 120:140] = (10, 200, 30)          # a patch centred at (129.5, 49.5)
    box = box_around((120, 40, 140, 60), out_size=40, margin=2.0)   # side 40 -> scale 1
    out = crop_color(img, box)
    assert out.shape == (40, 40, 3)
    # the patch lands in the middle 20x20 of the crop
    assert (out[10:30, 10:30] == (10, 200, 30)).all()
    assert (out[:9] == 0).all() and (out[31:] == 0).all()


def test_depth_uses_nearest_and_outside_is_invalid():
    depth = np.full((50, 50), 1000, np.uint16)
    depth[:, 25:] = 3000
    box = CropBox(x0=-25.0, y0=0.0, side=100.0, out_size=64)   # half outside the image on the left
    out = crop_depth(depth, box)
    assert out.dtype == np.uint16
    assert set(np.unique(out)) <= {0, 1000, 3000}     # no interpolated depths
    assert (out[:, :10] == 0).all()                    # outside -> invalid
    m = crop_mask(depth > 2000, box)
    assert m.dtype == bool and m.any() and not m[:, :10].any()


def test_bad_boxes_rejected():
    with pytest.raises(ValueError):
        box_around((10, 10, 10, 20), out_size=64)
    with pytest.raises(ValueError):
        crop_depth(np.zeros((4, 4, 3), np.uint16), CropBox(0, 0, 4, 4))
