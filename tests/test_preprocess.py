"""The one preprocessing path shared by training and deploy: pixels in, model input out."""
import io

import numpy as np
import pytest
from PIL import Image

from datasets import ImageError, InputSpec, load_image, to_model_input
from tests.conftest import png_bytes


def test_to_model_input():
    pixels = np.array([[[0], [255]], [[51], [102]]], dtype=np.uint8)
    out = to_model_input(pixels)
    assert out.dtype == np.float32 and out.shape == (2, 2, 1)
    np.testing.assert_allclose(out[:, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    assert to_model_input(pixels[np.newaxis]).shape == (1, 2, 2, 1)
    with pytest.raises(ImageError, match="got a float32 array"):
        to_model_input(out)
    with pytest.raises(ImageError, match=r"shape \(H, W, C\) or \(N, H, W, C\)"):
        to_model_input(np.zeros((4, 4), np.uint8))


def test_load_image_png_round_trip_grey_and_rgb(tmp_path, digits, shapes):
    grey = digits.images[123]
    path = tmp_path / "grey.png"
    path.write_bytes(png_bytes(grey))
    back = load_image(str(path), digits.input_spec)
    assert back.shape == (28, 28, 1) and back.dtype == np.uint8
    assert np.array_equal(back, grey)
    rgb = shapes.images[7]
    assert np.array_equal(load_image(png_bytes(rgb), shapes.input_spec), rgb)


def test_load_image_wrong_size_message():
    data = png_bytes(np.zeros((20, 30, 1), np.uint8))
    with pytest.raises(ImageError, match=r"is 30x20 \(WxH\), expected 28x28; pass --resize"):
        load_image(data, InputSpec(28, 28, 1))
    resized = load_image(data, InputSpec(28, 28, 1), resize=True)
    assert resized.shape == (28, 28, 1)


def test_load_image_wrong_mode_message_and_convert():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    data = png_bytes(rgba)
    with pytest.raises(ImageError, match=r"has mode RGBA, expected RGB .*pass --convert"):
        load_image(data, InputSpec(8, 8, 3))
    converted = load_image(data, InputSpec(8, 8, 3), convert=True)
    assert converted.shape == (8, 8, 3) and np.all(converted[..., 0] == 200)
    assert np.all(converted[..., 1:] == 0)
    grey = load_image(data, InputSpec(8, 8, 1), convert=True)
    assert grey.shape == (8, 8, 1) and np.all(grey == round(200 * 299 / 1000))


def test_load_image_palette_and_both_fixes():
    palette = Image.new("P", (10, 5))
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    with pytest.raises(ImageError) as err:
        load_image(buf.getvalue(), InputSpec(4, 4, 1))
    assert "mode P, expected L" in str(err.value) and "pass --resize" in str(err.value)
    out = load_image(buf.getvalue(), InputSpec(4, 4, 1), resize=True, convert=True)
    assert out.shape == (4, 4, 1) and out.max() > 0


def test_load_image_corrupt_and_missing(tmp_path):
    with pytest.raises(ImageError, match=r"the given data \(9 bytes\) is not a readable image \("):
        load_image(b"not a png", InputSpec(8, 8, 1))
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes(np.zeros((8, 8, 1), np.uint8))[:40])
    with pytest.raises(ImageError, match="broken.png is not a readable image"):
        load_image(str(broken), InputSpec(8, 8, 1))
    with pytest.raises(ImageError, match="does not exist"):
        load_image(str(tmp_path / "nothing.png"), InputSpec(8, 8, 1))
