"""PNG writing and grids, decoded back with matplotlib's independent PNG reader."""

from mlxkit.images import colormap, image_grid, save_png

import numpy as np
import pytest

matplotlib_image = pytest.importorskip("matplotlib.image")


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)])
def test_png_round_trips_through_an_independent_decoder(tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = matplotlib_image.imread(save_png(pixels, tmp_path / "x.png"))
    np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), pixels)


def test_float_images_are_clipped_and_rounded(tmp_path):
    image = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]])
    decoded = matplotlib_image.imread(save_png(image, tmp_path / "x.png"))
    np.testing.assert_array_equal(np.round(decoded * 255), [[0, 0, 128, 255, 255]])


def test_colormap_ends_and_grid_layout():
    rgb = colormap(np.array([[0.0, 10.0]]))
    assert rgb[0, 0].sum() < 0.1 and rgb[0, 1].sum() > 2.5  # dark to bright
    grid = image_grid([[np.zeros((2, 3)), np.ones((2, 3))]], padding=1)
    assert grid.shape == (4, 9, 3)
    assert grid[1:3, 5:8].min() == 1.0 and grid[1:3, 1:4].max() == 0.0


def test_bad_shapes_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"shape=\(2, 2, 5\)"):
        save_png(np.zeros((2, 2, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="all images must be 2x3"):
        image_grid([[np.zeros((2, 3)), np.zeros((3, 3))]])


def test_grid_reads_uint8_images_as_0_to_255():
    grid = image_grid([[np.full((2, 2), 255, np.uint8), np.zeros((2, 2, 3))]], padding=0)
    assert grid[:, :2].min() == 1.0 and grid[:, 2:].max() == 0.0
