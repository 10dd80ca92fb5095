"""Your own images: one sub-folder per class, e.g. ``photos/cat/*.jpg``, ``photos/dog/*.jpg``.

Images are read with the same ``load_image`` the deploy side uses (with convert and resize on,
EXIF orientation applied), so training pixels match what the Pi feeds the model. Folders inside a
class folder belong to that class. Files that are not readable images (a ``notes.txt``, a broken
download) are skipped and listed in ``Dataset.skipped`` (training prints one line and keeps the
list in the manifest). Decoded images stay on disk (``datasets.image_cache``): a folder of any
size is read a batch at a time, and decoded once for all the steps.
"""
import os

import numpy as np

from datasets.core import CONTRACT_DEFAULTS, Dataset, DatasetError, InputSpec, int_option, path_option
from datasets.image_cache import cached_decode, folder_key
from datasets.preprocess import ImageError, load_image


def load_folder(path, channels=3, size=96, height=None, width=None, resize_method="bilinear", color_order="RGB"):
    """Images from PATH/<class>/<image>, one sub-folder per class (sorted names = classes), resized by
    ``resize_method`` and with channels in ``color_order`` (a model's input contract)."""
    root = path_option("folder", "path", path)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DatasetError(
            f"folder option channels={channels!r} is invalid: expected 1 (grey) or 3 (RGB)")
    channels = int(channels)
    size = int_option("folder", "size", size, 1, 4096)
    height = size if height is None else int_option("folder", "height", height, 1, 4096)
    width = size if width is None else int_option("folder", "width", width, 1, 4096)
    try:
        spec = InputSpec(height, width, channels, resize_method, color_order)
    except DatasetError as exc:
        raise DatasetError(f"folder option: {exc}") from exc
    contract = {k: v for k, v in (("resize_method", resize_method), ("color_order", color_order))
                if v != CONTRACT_DEFAULTS[k]}

    class_names = _class_folders(root)
    paths, classes = [], []
    for label, name in enumerate(class_names):
        found = _files(os.path.join(root, name))
        paths.extend(found)
        classes.extend([label] * len(found))
    try:
        images, kept, skipped = cached_decode(
            folder_key(root, paths, (height, width, channels, *(f"{k}={v}" for k, v in contract.items()))), paths, (height, width, channels),
            lambda path: load_image(path, spec, resize=True, convert=True), ImageError)
    except OSError as exc:
        raise DatasetError(str(exc)) from exc
    labels = np.asarray(classes, dtype=np.int64)[np.asarray(kept, dtype=np.int64)]
    counts = np.bincount(labels, minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if not count:
            raise DatasetError(
                f"class folder {os.path.join(root, name)} has no readable images; add some images "
                "or remove the folder")
    return Dataset(
        name="folder",
        images=images,
        labels=labels,
        class_names=class_names,
        groups=np.arange(len(labels), dtype=np.int64),
        options={"path": root, "channels": channels, "height": height, "width": width, **contract},
        skipped=skipped,
    )


def _class_folders(root):
    """Sorted names of the (non-hidden) sub-folders of ``root``; at least two."""
    if not os.path.isdir(root):
        raise DatasetError(
            f"folder data set path {root} is not a directory; expected a folder with one "
            "sub-folder of images per class")
    names = sorted(entry.name for entry in os.scandir(root)
                   if entry.is_dir() and not entry.name.startswith("."))
    if len(names) < 2:
        raise DatasetError(
            f"folder data set {root} has {len(names)} class sub-folder(s) {names}; expected at "
            "least 2 (one sub-folder of images per class, e.g. cat/ and dog/)")
    return names


def _files(folder):
    """Paths of the non-hidden files under ``folder``, recursively, in sorted order."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(top, f) for f in files if not f.startswith("."))
    return sorted(found)
