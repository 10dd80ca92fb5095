"""Data sets, splits and the shared preprocessing of the Edge TPU pipeline.

Importing this package needs only numpy and pillow (scikit-learn is imported
when the "digits" data set is loaded), so the deploy side can use
``datasets.preprocess`` on a Raspberry Pi.

    ds = load_dataset("digits")                 # 14376 28x28 grey images
    splits = make_splits(ds, seed=0)            # {"train", "val", "test"} by group
    x = to_model_input(ds.images[splits["test"]])  # float32 in [0, 1]
"""
from datasets.preprocess import ImageError, load_image, to_model_input
from datasets.registry import (
    Dataset,
    DatasetError,
    InputSpec,
    available_datasets,
    load_dataset,
)
from datasets.splits import (
    SplitError,
    load_splits,
    make_splits,
    representative_samples,
    save_splits,
)

__all__ = [
    "Dataset", "DatasetError", "ImageError", "InputSpec", "SplitError", "available_datasets",
    "load_dataset", "load_image", "load_splits", "make_splits", "representative_samples",
    "save_splits", "to_model_input",
]
