"""MNIST from a local Keras-format ``mnist.npz``; never downloads.

The file has keys x_train (60000, 28, 28) uint8, y_train, x_test, y_test. All
70000 samples are concatenated (train first) so our own group split applies.
"""
import os
import zipfile

import numpy as np

from datasets.core import Dataset, DatasetError, path_option

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist(path):
    """MNIST digits, 28x28 grey, from a local Keras mnist.npz (no download)."""
    path = path_option("mnist", "path", path)
    if not os.path.isfile(path):
        raise DatasetError(
            f"MNIST file {path} does not exist. This tool never downloads; fetch it once with "
            f"`curl -o mnist.npz {URL}` (or copy ~/.keras/datasets/mnist.npz) and pass its path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise DatasetError(
                    f"{path} lacks {', '.join(missing)} (has {', '.join(npz.files)}); expected the "
                    f"Keras mnist.npz from {URL}")
            arrays = {k: npz[k] for k in KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"{path} is not a readable .npz file ({exc}); download it again from {URL}") from exc

    images = np.concatenate([arrays["x_train"], arrays["x_test"]])
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"{path} holds {images.dtype} images of shape {images.shape} and labels of shape "
            f"{labels.shape}; expected uint8 (N, 28, 28) images and (N,) labels as in {URL}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(
            f"{path} has labels {labels.min()}..{labels.max()}; expected digits 0..9")
    n = len(images)
    return Dataset(
        name="mnist",
        images=images[..., np.newaxis],
        labels=labels.astype(np.int64),
        class_names=[str(d) for d in range(10)],
        groups=np.arange(n, dtype=np.int64),
        options={"path": path},
    )
