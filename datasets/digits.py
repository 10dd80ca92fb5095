"""The embedded default data set: scikit-learn's 8x8 digits, enlarged to 28x28 and augmented.

scikit-learn ships the 1797 images inside its package, so nothing is
downloaded. Each original becomes ``variants`` samples (variant 0 is the plain
resized image, the others are shifted, rotated and noisy copies), which gives
enough data for a 70/10/20 split with >= 10000 training samples. All samples
made from one original share a group id so a split never leaks an original
into two parts.
"""
import numpy as np
from PIL import Image

from datasets.core import Dataset, DatasetError, float_option, int_option

SIZE = 28
MAX_SHIFT = 2.0        # pixels, each direction
MAX_ROTATION = 12.0    # degrees, either way
MAX_VARIANT_NOISE = 0.04  # largest per-variant Gaussian noise std, in 0..1 units


def load_digits(variants=8, seed=0, noise=0.0):
    """Hand-written digits 0-9, 28x28 grey, from scikit-learn's bundled set (no download)."""
    variants = int_option("digits", "variants", variants, 1, 64)
    seed = int_option("digits", "seed", seed, 0)
    noise = float_option("digits", "noise", noise, 0.0, 1.0)

    originals, targets = _read_originals()
    base = _resize(originals)                       # (n, 28, 28) float32, 0..255
    rng = np.random.default_rng(seed)
    samples = np.repeat(base[:, np.newaxis], variants, axis=1)  # (n, variants, 28, 28)
    if variants > 1:
        samples[:, 1:] = _augment(base, variants - 1, rng)
    samples = samples.reshape(-1, SIZE, SIZE)
    if noise > 0:
        samples += rng.standard_normal(samples.shape, dtype=np.float32) * np.float32(noise * 255)
    images = np.clip(np.rint(samples), 0, 255).astype(np.uint8)[..., np.newaxis]

    n = len(originals)
    return Dataset(
        name="digits",
        images=images,
        labels=np.repeat(targets.astype(np.int64), variants),
        class_names=[str(d) for d in range(10)],
        groups=np.repeat(np.arange(n, dtype=np.int64), variants),
        options={"variants": variants, "seed": seed, "noise": noise},
    )


def _read_originals():
    """The 1797 8x8 images (values 0..16) and their labels from scikit-learn."""
    try:
        from sklearn.datasets import (
            load_digits as sklearn_digits,  # Lazy: not needed on the Pi.
        )
    except ImportError as exc:
        raise DatasetError(
            f"the 'digits' data set needs scikit-learn, which is not installed ({exc}); "
            "run `pip install scikit-learn` or use another data set") from exc
    bunch = sklearn_digits()
    return bunch.images.astype(np.float32), np.asarray(bunch.target)


def _resize(originals):
    """8x8 (0..16) -> 28x28 float32 (0..255), bilinear with pillow."""
    out = np.empty((len(originals), SIZE, SIZE), dtype=np.float32)
    for i, img in enumerate(originals):
        big = Image.fromarray(img).resize((SIZE, SIZE), Image.BILINEAR)
        out[i] = np.asarray(big)
    return out * np.float32(255.0 / 16.0)


def _augment(base, count, rng):
    """``count`` shifted, rotated, noisy copies of each base image: (n, count, 28, 28).

    Every random number is drawn up front in a fixed order, so the result only
    depends on the seed.
    """
    n = len(base)
    angles = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=(n, count)))
    shifts = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n, count, 2))
    stds = rng.uniform(0.0, MAX_VARIANT_NOISE, size=(n, count)).astype(np.float32) * 255
    noise = rng.standard_normal((n, count, SIZE, SIZE), dtype=np.float32)

    out = np.empty((n, count, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        image = Image.fromarray(base[i])
        for k in range(count):
            coeffs = _affine(angles[i, k], shifts[i, k, 0], shifts[i, k, 1])
            moved = image.transform((SIZE, SIZE), Image.AFFINE, coeffs,
                                    resample=Image.BILINEAR, fillcolor=0.0)
            out[i, k] = np.asarray(moved)
    return out + noise * stds[:, :, np.newaxis, np.newaxis]


def _affine(angle, dx, dy):
    """Pillow AFFINE coefficients (output -> input) for a rotation about the centre, then a shift."""
    c, s = np.cos(angle), np.sin(angle)
    centre = SIZE / 2.0
    x0, y0 = centre + dx, centre + dy
    return (c, s, centre - c * x0 - s * y0,
            -s, c, centre + s * x0 - c * y0)
