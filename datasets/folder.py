"""Your own images: one sub-folder per class, e.g. ``photos/cat/*.jpg``, ``photos/dog/*.jpg``.

Images are read with the same ``load_image`` the deploy side uses (with convert and resize on,
EXIF orientation applied), so training pixels match what the Pi feeds the model. Folders inside a
class folder belong to that class. Files that are not readable images (a ``notes.txt``, a broken
download) are skipped and listed in ``Dataset.skipped`` (training prints one line and keeps the
list in the manifest); a class with fewer than ``FEW_IMAGES`` images gets a warning.
"""
import os
import warnings

import numpy as np

from datasets.core import Dataset, DatasetError, InputSpec, int_option, path_option
from datasets.preprocess import ImageError, load_image

FEW_IMAGES = 10


def load_folder(path, channels=3, size=96, height=None, width=None):
    """Images from PATH/<class>/<image>, one sub-folder per class (sorted names = classes)."""
    root = path_option("folder", "path", path)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DatasetError(
            f"folder option channels={channels!r} is invalid: expected 1 (grey) or 3 (RGB)")
    channels = int(channels)
    size = int_option("folder", "size", size, 1, 4096)
    height = size if height is None else int_option("folder", "height", height, 1, 4096)
    width = size if width is None else int_option("folder", "width", width, 1, 4096)
    spec = InputSpec(height, width, channels)

    class_names = _class_folders(root)
    images, labels, skipped = [], [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        found = _read_folder(folder, spec, skipped)
        if not found:
            raise DatasetError(
                f"class folder {folder} has no readable images; add some images "
                "or remove the folder")
        if len(found) < FEW_IMAGES:
            warnings.warn(f"class {name!r} has only {len(found)} images (fewer than {FEW_IMAGES}): its accuracy "
                          "will be unreliable; add images, or train with --class-weights balanced", stacklevel=2)
        images.extend(found)
        labels.extend([label] * len(found))

    n = len(images)
    return Dataset(
        name="folder",
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        groups=np.arange(n, dtype=np.int64),
        options={"path": root, "channels": channels, "height": height, "width": width},
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


def _read_folder(folder, spec, skipped):
    """All readable images in ``folder`` and its sub-folders (sorted by path); the others go to ``skipped``."""
    pixels = []
    for path in _files(folder):
        try:
            pixels.append(load_image(path, spec, resize=True, convert=True))
        except ImageError as exc:
            skipped.append({"path": path, "reason": str(exc)})
    return pixels


def _files(folder):
    """Paths of the non-hidden files under ``folder``, recursively, in sorted order."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(top, f) for f in files if not f.startswith("."))
    return sorted(found)
