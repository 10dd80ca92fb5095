"""A folder of photo-like images, made deterministically: per class a texture (stripes or blobs at its
own frequency and angle), colour statistics and an object, on noisy backgrounds; mixed sizes
(150x150 to 640x480), JPEG and PNG, some grey, a nested folder per class, as a phone gives them.

    python bench/photo_like.py OUT [--classes 6] [--per-class 250] [--seed 0]
"""
import argparse
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = ((150, 150), (320, 240), (480, 360), (640, 480), (240, 320))


def _class_style(rng):
    return {"hue": rng.uniform(0, 1, 3), "frequency": rng.uniform(0.02, 0.12), "angle": rng.uniform(0, np.pi),
            "blobs": bool(rng.integers(0, 2)), "shape": int(rng.integers(0, 3))}


def _image(style, size, rng):
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    along = np.cos(style["angle"]) * xx + np.sin(style["angle"]) * yy
    wave = np.sin(along * style["frequency"] * 2 * np.pi * rng.uniform(0.8, 1.25) + rng.uniform(0, 6.3))
    if style["blobs"]:
        wave = wave * np.sin(yy * style["frequency"] * 5 + rng.uniform(0, 6.3))
    colour = np.clip(style["hue"] + rng.normal(0, 0.08, 3), 0, 1)
    pixels = 127 + 60 * wave[..., None] * colour[None, None, :] + rng.normal(0, 18, (height, width, 3))
    pixels += (colour * 70 - 35)[None, None, :]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, rng.uniform(0.12, 0.3) * min(size)
    fill = tuple(int(v) for v in np.clip(255 * (1 - colour) + rng.normal(0, 20, 3), 0, 255))
    box = (cx - r, cy - r, cx + r, cy + r)
    [draw.ellipse, draw.rectangle, lambda b, fill: draw.polygon([(b[0], b[3]), ((b[0] + b[2]) / 2, b[1]),
                                                                 (b[2], b[3])], fill=fill)][style["shape"]](box,
                                                                                                            fill=fill)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def make_photo_folder(out, classes=6, per_class=250, seed=0, sizes=SIZES):
    """Writes OUT/class_K/[more/]N.jpg|png, each of one of ``sizes`` (width, height); returns the folder."""
    out = pathlib.Path(out)
    rng = np.random.default_rng(seed)
    styles = [_class_style(rng) for _ in range(classes)]
    for k, style in enumerate(styles):
        for n in range(per_class):
            folder = out / f"class_{k}" / ("more" if n % 5 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            image = _image(style, sizes[int(rng.integers(0, len(sizes)))], rng)
            if n % 7 == 0:
                image = image.convert("L")
            if n % 2:
                image.save(folder / f"{n}.jpg", quality=int(rng.integers(70, 95)))
            else:
                image.save(folder / f"{n}.png")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--per-class", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make_photo_folder(args.out, args.classes, args.per_class, args.seed))


if __name__ == "__main__":
    main()
