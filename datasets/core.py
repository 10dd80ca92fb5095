"""The data types every loader returns, and checks for loader options.

Numpy only, so that ``datasets.preprocess`` (which needs ``InputSpec``) can be
imported on the Raspberry Pi without scikit-learn or TensorFlow.
"""
import dataclasses
import numbers
import os

import numpy as np

from datasets.image_cache import DiskImages
from runfolder.errors import UserError

_MODES = {1: "L", 3: "RGB"}
# Pillow's resampling filters by name; "lanczos" is what Coral's classify_image.py uses (Image.ANTIALIAS).
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "box")
COLOR_ORDERS = ("RGB", "BGR")
CONTRACT_DEFAULTS = {"resize_method": "bilinear", "color_order": "RGB"}


class DatasetError(UserError):
    """A data set name, option or file is wrong; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input image: height x width x channels (1 grey, 3 RGB), the order of its colour channels
    (RGB, or BGR as Caffe-trained models take them) and how an image of another size is resized to it."""

    height: int
    width: int
    channels: int
    resize_method: str = "bilinear"
    color_order: str = "RGB"

    def __post_init__(self):
        for field in ("height", "width"):
            value = getattr(self, field)
            if not _is_int(value) or value < 1:
                raise DatasetError(
                    f"InputSpec {field}={value!r} is invalid: expected a positive integer")
            object.__setattr__(self, field, int(value))
        if not _is_int(self.channels) or int(self.channels) not in _MODES:
            raise DatasetError(
                f"InputSpec channels={self.channels!r} is invalid: expected 1 (grey) or 3 (RGB)")
        object.__setattr__(self, "channels", int(self.channels))
        if self.resize_method not in RESIZE_METHODS:
            raise DatasetError(f"resize method {self.resize_method!r} is unknown: expected one of "
                               f"{', '.join(RESIZE_METHODS)}")
        if self.color_order not in COLOR_ORDERS:
            raise DatasetError(f"colour order {self.color_order!r} is unknown: expected RGB or BGR")

    @property
    def mode(self):
        """The PIL image mode of these pixels: "L" for 1 channel, "RGB" for 3."""
        return _MODES[self.channels]

    @property
    def shape(self):
        """(height, width, channels), the shape of one image array."""
        return (self.height, self.width, self.channels)

    def to_dict(self):
        """JSON-friendly form, as stored in the run manifest (resize method and colour order when not
        the defaults, so manifests written before they existed read the same)."""
        found = {"height": self.height, "width": self.width, "channels": self.channels}
        found.update({k: getattr(self, k) for k, default in CONTRACT_DEFAULTS.items() if getattr(self, k) != default})
        return found

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict``; names the missing keys if ``d`` is incomplete."""
        if not isinstance(d, dict):
            raise DatasetError(
                f"input spec must be a dict with height, width and channels, got {type(d).__name__}")
        missing = [k for k in ("height", "width", "channels") if k not in d]
        if missing:
            raise DatasetError(
                f"input spec {d!r} lacks {', '.join(missing)}; "
                "expected keys height, width and channels (re-run training to rewrite it)")
        return cls(height=d["height"], width=d["width"], channels=d["channels"],
                   **{k: d.get(k, default) for k, default in CONTRACT_DEFAULTS.items()})


@dataclasses.dataclass
class Dataset:
    """A whole data set in memory.

    Attributes:
      name: registry name, e.g. "digits".
      images: uint8 pixels, shape (N, H, W, C).
      labels: int64 class indices, shape (N,).
      class_names: one name per class; labels index into it.
      groups: int64, shape (N,). Samples made from the same original image share
        a group id, so splits can keep them together (no train/test leakage).
      options: JSON-serialisable; ``load_dataset(name, **options)`` rebuilds
        exactly these arrays.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list
    groups: np.ndarray
    options: dict
    skipped: list = dataclasses.field(default_factory=list)   # [{"path", "reason"}] of files not read

    def __post_init__(self):
        images, labels, groups = self.images, self.labels, self.groups
        if not isinstance(images, (np.ndarray, DiskImages)) or images.dtype != np.uint8 or images.ndim != 4:
            raise DatasetError(
                f"data set {self.name!r}: images must be a uint8 array of shape (N, H, W, C), got "
                f"{_describe(images)}")
        n = images.shape[0]
        for what, arr in (("labels", labels), ("groups", groups)):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int64 or arr.shape != (n,):
                raise DatasetError(
                    f"data set {self.name!r}: {what} must be an int64 array of shape ({n},), got "
                    f"{_describe(arr)}")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DatasetError(
                f"data set {self.name!r}: labels range {labels.min()}..{labels.max()} but there are "
                f"{len(self.class_names)} class names")
        InputSpec(*images.shape[1:])  # Checks channels is 1 or 3.

    def __len__(self):
        return int(self.images.shape[0])

    @property
    def input_spec(self):
        """The InputSpec of one image of this data set (resize method and colour order from its options)."""
        return InputSpec(*self.images.shape[1:], **{k: self.options.get(k, default)
                                                    for k, default in CONTRACT_DEFAULTS.items()})

    def skipped_summary(self):
        """One line on the files that were not read, or None: each step says it once, not per file."""
        if not self.skipped:
            return None
        first = self.skipped[0]
        return (f"skipped {len(self.skipped)} file(s) that are not readable images (first: {first['path']}: "
                f"{first['reason'][:120]}); all are listed in the manifest, dataset.skipped")


def parse_option(text):
    """("key", value) from a command line's KEY=VALUE (the value read as JSON when it is, else as text)."""
    import argparse
    import json
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a data set option is KEY=VALUE (e.g. path=/data/photos), got '{text}'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _describe(arr):
    if isinstance(arr, np.ndarray):
        return f"{arr.dtype} array of shape {arr.shape}"
    return type(arr).__name__


def int_option(dataset, name, value, low, high=None):
    """Returns ``value`` as an int, or raises DatasetError if it is not in [low, high]."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        expected = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise DatasetError(
            f"{dataset} option {name}={value!r} is invalid: expected {expected}")
    return int(value)


def float_option(dataset, name, value, low, high):
    """Returns ``value`` as a float, or raises DatasetError if it is not in [low, high]."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not low <= float(value) <= high):
        raise DatasetError(
            f"{dataset} option {name}={value!r} is invalid: expected a number from {low} to {high}")
    return float(value)


def path_option(dataset, name, value):
    """Returns ``value`` as an absolute path string (so stored options work from any cwd)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise DatasetError(
            f"{dataset} option {name}={value!r} is invalid: expected a file system path, e.g. "
            f"load_dataset({dataset!r}, {name}='/data/...')")
    return os.path.abspath(os.fspath(value))
