import numpy as np
import pytest

from finescale.data.regions import axis_geometry, axis_profiles, find_bright_axis, object_crops, oriented_crop
from finescale.synth.implants import CATALOGUE, render_radiograph


@pytest.mark.parametrize("index", range(6))
def test_axis_found_from_the_image_matches_the_rendered_implant(index: int):
    rng = np.random.default_rng(index)
    model = CATALOGUE[(index * 5) % len(CATALOGUE)]
    image, info = render_radiograph(
        model, model.lengths_mm[index % len(model.lengths_mm)], model.diameters_mm[0], rng, size=256
    )
    axis = find_bright_axis(image.astype(np.float32) / 255)
    true_top, true_bottom = np.array(info["axis_top_xy"]), np.array(info["axis_bottom_xy"])
    true_length = np.linalg.norm(true_bottom - true_top)
    assert np.linalg.norm(np.array(axis.top) - true_top) < 0.15 * true_length
    assert np.linalg.norm(np.array(axis.bottom) - true_bottom) < 0.15 * true_length
    assert abs(axis.length - true_length) < 0.15 * true_length


def test_axis_falls_back_on_a_blank_image():
    axis = find_bright_axis(np.full((64, 64), 0.5, dtype=np.float32))
    assert axis.top[1] < axis.bottom[1]


def test_oriented_crop_turns_a_tilted_bar_upright():
    image = np.zeros((200, 200), dtype=np.float32)
    for t in np.linspace(-60, 60, 400):  # a bar tilted 30 degrees from vertical
        x, y = 100 + t * np.sin(np.radians(30)), 100 + t * np.cos(np.radians(30))
        image[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 1.0
    axis = find_bright_axis(image)
    assert axis.angle == pytest.approx(30, abs=3)
    crop = oriented_crop(image, (100, 100), axis.angle, side=60, out=60)
    column_mass = crop.sum(axis=0)
    assert abs(int(np.argmax(column_mass)) - 30) <= 2  # the bar now runs down the middle column
    assert column_mass.max() > 0.8 * crop.shape[0]


def test_object_crops_shape_order_and_geometry():
    image = np.zeros((120, 80), dtype=np.float32)
    image[20:100, 30:50] = 1.0
    image[90:100, 30:50] = 0.8  # a dimmer tip, so the two end crops differ
    axis = find_bright_axis(image)
    assert axis.length == pytest.approx(79, abs=2) and axis.width == pytest.approx(19, abs=2)
    crops = object_crops(image, axis, out=24)
    assert crops.shape == (3, 24, 24) and crops.dtype == np.float32
    assert crops[0].mean() > crops[1].mean()  # collar crop first: brighter than the dim tip
    assert object_crops(image, axis, out=24, whole=False).shape == (2, 24, 24)
    geometry = axis_geometry(axis, image.shape)
    assert geometry[0] == pytest.approx(79 / 120, abs=0.02) and geometry[3] == pytest.approx(0, abs=0.05)


def test_axis_profiles_show_the_thread_period():
    # a vertical bar whose brightness oscillates with a period of 8 px, like threads on a radiograph
    image = np.zeros((200, 100), dtype=np.float32)
    rows = np.arange(40, 160)
    image[40:160, 40:60] = (0.7 + 0.2 * np.sin(2 * np.pi * rows / 8.0))[:, None]
    axis = find_bright_axis(image)
    profiles = axis_profiles(image, axis, samples=512)
    assert profiles.shape == (5, 512)
    centre = profiles[2, 40:-40] - profiles[2, 40:-40].mean()
    spectrum = np.abs(np.fft.rfft(centre))
    peak = int(np.argmax(spectrum[1:])) + 1
    samples_per_px = 512 / (1.1 * axis.length)
    assert len(centre) / peak / samples_per_px == pytest.approx(8.0, rel=0.1)
