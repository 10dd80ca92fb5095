"""Pixels in, model input out: the one preprocessing used in training AND at deploy time.

Numpy and pillow only, so the Raspberry Pi can import it. Keeping a single
``to_model_input`` means the float model, the int8 calibration set and the
Edge TPU pipeline all see identically scaled inputs.
"""
import contextlib
import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from datasets.core import InputSpec
from datasets.decode_limits import ALLOWED_FORMATS, MAX_IMAGE_PIXELS, decode_cost
from runfolder.errors import OptionError, UserError


class ImageError(UserError):
    """An image cannot be read, or does not match the model input; the message says why."""


# Pillow reports broken files with any of these, depending on the format.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# load_image checks every image's pixel count against its own, lower limit before decoding;
# Pillow's warning past 89 megapixels would only repeat that, once per image.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


# (mean, std) of a model's input: model input = (pixels - mean) / std.
PIXELS_0_1 = (0.0, 255.0)            # splitnet, rgbnet: [0, 1]
PIXELS_MINUS1_1 = (128.0, 128.0)     # MobileNets: [-1, 1) as Coral's models take it (uint8 input = raw pixels)
PIXELS_0_255 = (0.0, 1.0)            # models that scale inside (Keras' EfficientNet)


INPUT_RANGES = {"-1,1": PIXELS_MINUS1_1, "0,1": PIXELS_0_1, "0,255": PIXELS_0_255}


def parse_input_range(text):
    """(mean, std) for ``--input-range`` -1,1 | 0,1 | 0,255 (the values the model was trained on)."""
    key = str(text).replace(" ", "").replace("[", "").replace("]", "").replace(")", "")
    if key not in INPUT_RANGES:
        raise OptionError(f"--input-range {text!r}: choose one of {' | '.join(INPUT_RANGES)} (the values the model "
                         "was trained on), or give --mean and --std")
    return INPUT_RANGES[key]


def normalization_from_options(input_range=None, mean=None, std=None):
    """((mean, std), where it was said) from ``--input-range`` or ``--mean/--std``, or None when neither
    was given; ValueError naming the option when they do not hold together."""
    if (mean is None) != (std is None) or (input_range and mean is not None):
        raise OptionError("--mean and --std go together: give --input-range, or --mean with --std "
                         "(model input = (pixels - mean) / std)")
    if input_range:
        return parse_input_range(input_range), f"--input-range {input_range}"
    if mean is None:
        return None
    if not std > 0:
        raise OptionError(f"--std must be above 0, got {std:g}")
    return (float(mean), float(std)), f"--mean {mean:g} --std {std:g}"


def raw_pixel_normalization(tensor):
    """(mean, std) under which a quantized image input holds the pixels themselves: (zero point, 1/scale)
    for uint8 (Coral's MobileNets: 128, 128 for [-1, 1)), (zero point + 128, 1/scale) for int8 (the
    pixels minus 128); None for a float input or one without a single scale."""
    scale, zero = (tensor or {}).get("scale"), (tensor or {}).get("zero_point")
    if not isinstance(scale, (int, float)) or not scale or not isinstance(zero, int):
        return None
    offset = {"uint8": 0.0, "int8": 128.0}.get(tensor.get("dtype"))
    return None if offset is None else (float(zero) + offset, 1.0 / float(scale))


def normalization_of(manifest):
    """(mean, std) of the run's model input: as trained (``training.input_normalization``), else as the
    input contract says (``input.normalization``, from ``--input-range`` or read from the model), else
    what makes the first stage's quantized input the raw pixels, else [0, 1]."""
    manifest = manifest or {}
    found = (manifest.get("training") or {}).get("input_normalization") or \
        (manifest.get("input") or {}).get("normalization")
    if found:
        return float(found["mean"]), float(found["std"])
    stages = manifest.get("stages") or [{}]
    first = ((manifest.get("split") or {}).get("model_inputs") or (stages[0] or {}).get("inputs") or [None])[0]
    return raw_pixel_normalization(first) or PIXELS_0_1


def output_kind_of(manifest):
    """"probabilities" when the run's model ends in a softmax, "logits" when not, None when unrecorded
    (``deploy.core.tensors.class_scores`` then goes by the output's quantization)."""
    return ((manifest or {}).get("output") or {}).get("kind")


def to_model_input(pixels, normalization=PIXELS_0_1):
    """uint8 pixels (H, W, C) or (N, H, W, C) -> float32 (pixels - mean) / std.

    The default (0, 255) gives [0, 1]; (128, 128) gives [-1, 127/128] as Coral's MobileNets
    take it, so a uint8 input quantized with scale 1/128 and zero point 128 is the raw pixels.

    Raises:
      ImageError: if ``pixels`` is not a uint8 array of 3 or 4 dimensions.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        found = f"{pixels.dtype} array" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ImageError(
            f"to_model_input expects uint8 pixels (0..255), got a {found}; "
            "pass the raw image array, not an already scaled one")
    if pixels.ndim not in (3, 4):
        raise ImageError(
            f"to_model_input expects shape (H, W, C) or (N, H, W, C), got {pixels.shape}")
    mean, std = normalization
    return (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)


def range_sample(image):
    """A copy of ``image`` (uint8 H, W, C) with one pixel black and one white in every channel.

    Calibrating with it makes the int8 input's range exactly the pixels' range (0 and 255 are seen),
    so the input scale is 1/std and the zero point the mean: the raw pixels. Two pixels of an
    ordinary image leave the ranges of the layers after the input as ordinary images make them; an
    image of every value 0..255 in a repeating pattern (tried first) made them several times wider
    and cost EfficientNet B0 10.7 points of int8 accuracy, MobileNetV2 2.7 (bench/transfer_learning.py).
    """
    pixels = np.array(image, dtype=np.uint8, copy=True)
    pixels.reshape(-1, pixels.shape[-1])[0] = 0
    pixels.reshape(-1, pixels.shape[-1])[-1] = 255
    return pixels


def load_image(source, spec, resize=False, convert=False, max_pixels=MAX_IMAGE_PIXELS, budget=None):
    """Reads one image file (or its bytes) as uint8 pixels of shape spec.shape.

    The header is checked before any pixel is decoded: the format (see ``ALLOWED_FORMATS``),
    the size when ``resize`` is off, and the pixel count against ``max_pixels`` (a large
    JPEG is decoded at 1/2, 1/4 or 1/8 scale when that brings it under the limit and it is
    to be resized anyway).

    Args:
      source: a path, or the encoded bytes of a PNG/JPEG/... file.
      spec: the InputSpec the model expects.
      resize: resize (by ``spec.resize_method``) if the size differs, instead of raising.
      convert: convert the colour mode (RGBA, P, LA, ... -> RGB or L) if it
        differs, instead of raising.
      max_pixels: the largest image decoded (width x height).
      budget: a ``DecodeBudget`` shared by concurrent callers, or None.
    Returns:
      np.ndarray uint8 of shape (spec.height, spec.width, spec.channels), channels in
      ``spec.color_order``; grey images keep a trailing channel axis of 1.
    Raises:
      ImageError: unreadable image, too many pixels, or wrong mode/size without convert/resize.
      DecodeBusy: ``budget`` had no room within its wait.
    """
    if not isinstance(spec, InputSpec):
        raise TypeError(f"spec must be a datasets.InputSpec, got {type(spec).__name__}")
    image, name = _open(source)
    orientation = _orientation(image)   # a phone's portrait photo: stored landscape, EXIF says turn it
    width, height = (image.height, image.width) if orientation in _TURNED else image.size
    problems = []
    if image.mode != spec.mode and not convert:
        problems.append(
            f"{name} has mode {image.mode}, expected {spec.mode} "
            f"({spec.channels} channel{'s' if spec.channels > 1 else ''}); "
            "pass --convert to convert it")
    if (width, height) != (spec.width, spec.height) and not resize:
        problems.append(
            f"{name} is {width}x{height} (WxH), expected "
            f"{spec.width}x{spec.height}; pass --resize to resize it")
    if problems:
        raise ImageError(". ".join(problems))
    _within_limit(image, name, spec, max_pixels)
    cost = decode_cost(image.mode, image.width, image.height, spec.mode, convert)
    with budget.reserve(cost) if budget is not None else contextlib.nullcontext():
        _decode(image, name)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)   # as the camera held it, in training and deploy alike
        if image.mode != spec.mode:
            image = _convert(image, spec.mode)
        if image.size != (spec.width, spec.height):
            image = image.resize((spec.width, spec.height), _RESAMPLE[spec.resize_method])
        pixels = np.array(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if spec.color_order == "BGR" and spec.channels == 3:
        pixels = np.ascontiguousarray(pixels[:, :, ::-1])
    return pixels


def _open(source):
    """Opens an image and reads its header only; returns (PIL image, name for messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = f"the given data ({len(source)} bytes)"
        stream = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise ImageError(f"image file {name} does not exist; check the path")
        stream = name
    else:
        raise ImageError(
            f"image source must be a path or bytes, got {type(source).__name__}")
    try:
        return Image.open(stream, formats=ALLOWED_FORMATS), name
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} has far more pixels than allowed ({exc}); send a smaller image") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{name} is not a readable image (not one of {', '.join(ALLOWED_FORMATS)})") from exc
    except _PILLOW_ERRORS as exc:
        raise ImageError(f"{name} is not a readable image ({exc})") from exc


# Image.BILINEAR and its kin (not Image.Resampling) also work with the older Pillow of a Pi.
_RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS, "box": Image.BOX}
_TURNED = (5, 6, 7, 8)     # EXIF orientations that swap width and height


def _orientation(image):
    """The EXIF orientation tag (1..8) read from the header, or None. Only EXIF the header already gave
    (``info["exif"]``, as JPEG's APP1 does) is read: Pillow's PNG ``getexif`` decodes the whole image to
    look for it, which for a pixel bomb is the decoding the header check exists to avoid."""
    if "exif" not in image.info:
        return None
    try:
        return image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001  (a broken EXIF block: use the pixels as stored)
        return None


def _within_limit(image, name, spec, max_pixels):
    """Refuses an image over ``max_pixels``; a JPEG is first asked to decode at a reduced scale."""
    if image.width * image.height > max_pixels and image.format in ("JPEG", "MPO"):
        image.draft(None, (spec.width, spec.height))   # DCT scaling: 1/2, 1/4 or 1/8, never below the target
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"{name} is {image.width}x{image.height} = {image.width * image.height / 1e6:.1f} megapixels, "
            f"more than the {max_pixels / 1e6:.1f} allowed (the model takes {spec.width}x{spec.height}); "
            "send a smaller image")


def _decode(image, name):
    try:
        image.load()
    except _PILLOW_ERRORS as exc:
        raise ImageError(f"{name} is not a readable image ({exc})") from exc


def _convert(image, mode):
    """Converts to "L" or "RGB", going through RGBA for palette/alpha images."""
    if image.mode in ("P", "PA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16/32-bit grey: scale to 8 bits instead of clipping at 255.
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if wide.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(wide * 255.0 / top), 0, 255).astype(np.uint8))
    return image.convert(mode)
