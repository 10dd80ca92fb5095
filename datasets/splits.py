"""Train/val/test index splits by group, saved next to the run so every step uses the same one.

Splitting by group (not by sample) keeps all augmented copies of one original
image in the same part, so test accuracy is not inflated by near-duplicates
of training images.
"""
import os
import warnings
import zipfile

import numpy as np

from datasets.core import DatasetError
from datasets.preprocess import PIXELS_0_1, range_sample, to_model_input

SPLITS = ("train", "val", "test")


class SplitError(DatasetError):
    """Split fractions, a split file, or split indices are wrong."""


def make_splits(dataset, seed=0, fractions=(0.7, 0.1, 0.2)):
    """Splits a dataset's samples into train/val/test by group.

    Groups are shuffled with ``seed`` and cut by ``fractions`` (of groups), so
    a group never spans two splits. Each split holds at least one group.

    Returns:
      {"train", "val", "test"}: sorted int64 index arrays into the dataset;
      disjoint and together covering every sample.
    """
    fractions = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SplitError(f"split seed={seed!r} is invalid: expected an integer >= 0")
    unique, inverse = np.unique(dataset.groups, return_inverse=True)
    if len(unique) < len(SPLITS):
        raise SplitError(
            f"data set {dataset.name!r} has {len(unique)} group(s); a train/val/test split needs "
            "at least 3 (add more images)")
    order = np.random.default_rng(seed).permutation(len(unique))
    counts = _group_counts(len(unique), fractions)
    part_of_group = np.empty(len(unique), dtype=np.int64)
    part_of_group[order] = np.repeat(np.arange(len(SPLITS)), counts)
    part = part_of_group[inverse]
    return {name: np.flatnonzero(part == i).astype(np.int64) for i, name in enumerate(SPLITS)}


def save_splits(path, splits):
    """Writes ``splits`` (as returned by make_splits) to an .npz file; returns the path."""
    _check_splits(splits, str(path))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:  # A file object stops numpy from appending ".npz".
        np.savez(f, **{name: np.asarray(splits[name], dtype=np.int64) for name in SPLITS})
    return path


def load_splits(path):
    """Reads a split file written by save_splits.

    Raises:
      SplitError: the file is missing, not an .npz, lacks a split, or its
        splits overlap.
    """
    if not os.path.isfile(path):
        raise SplitError(
            f"split file {path} does not exist; re-run training to create it "
            "(or save_splits(path, make_splits(dataset)))")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in SPLITS if name not in npz.files]
            if missing:
                raise SplitError(
                    f"split file {path} lacks {', '.join(missing)} (has {', '.join(npz.files)}); "
                    "expected train, val and test; re-run training to rewrite it")
            splits = {name: npz[name] for name in SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SplitError(
            f"split file {path} is corrupt or not an .npz ({exc}); re-run training to rewrite it"
        ) from exc
    _check_splits(splits, path)
    return {name: splits[name].astype(np.int64) for name in SPLITS}


def representative_samples(dataset, splits, count=200, seed=0, normalization=PIXELS_0_1):
    """``count`` float32 model inputs drawn from the TRAIN split only, for int8 calibration, and one
    ``range_sample`` first (so the int8 input covers every pixel value).

    Calibrating on test images would leak them into the quantized model. If the
    train split has fewer than ``count`` samples, all of them are returned.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise SplitError(f"representative count={count!r} is invalid: expected an integer >= 1")
    _check_splits(splits, "splits")
    train = np.asarray(splits["train"], dtype=np.int64)
    if not train.size:
        raise SplitError("the train split is empty; there is nothing to calibrate with")
    if train.max() >= len(dataset):
        raise SplitError(
            f"train split has index {train.max()} but data set {dataset.name!r} has "
            f"{len(dataset)} samples; the split was made for another data set or options")
    if count > len(train):
        warnings.warn(f"asked for {count} representative samples but the train split has "
                      f"{len(train)}; using all of them", stacklevel=2)
        count = len(train)
    chosen = np.sort(np.random.default_rng(seed).choice(train, size=count, replace=False))
    images = dataset.images[chosen]
    images = np.concatenate([range_sample(images[0])[np.newaxis], images])
    return to_model_input(images, normalization)


def _check_fractions(fractions):
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != len(SPLITS):
        raise SplitError(
            f"split fractions {fractions!r} are invalid: expected 3 numbers for train, val, test, "
            "e.g. (0.7, 0.1, 0.2)")
    if any(not v > 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise SplitError(
            f"split fractions {fractions!r} are invalid: each must be > 0 and they must sum to 1 "
            f"(they sum to {sum(values):g}), e.g. (0.7, 0.1, 0.2)")
    return values


def _group_counts(n, fractions):
    """Whole numbers of groups per split: largest remainders, at least one each."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    while (counts == 0).any():
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _check_splits(splits, where):
    if not isinstance(splits, dict) or any(name not in splits for name in SPLITS):
        found = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
        raise SplitError(f"{where}: expected a dict with train, val and test, got {found}")
    seen = []
    for name in SPLITS:
        arr = np.asarray(splits[name])
        if arr.ndim != 1 or (arr.size and (not np.issubdtype(arr.dtype, np.integer)
                                           or arr.min() < 0)):
            raise SplitError(
                f"{where}: split {name!r} must be a 1-D array of non-negative sample indices, "
                f"got {arr.dtype} array of shape {arr.shape}")
        seen.append(arr)
    merged = np.concatenate(seen)
    if len(np.unique(merged)) != len(merged):
        raise SplitError(f"{where}: train, val and test share samples; make the split again")
