"""Data sets by name: ``load_dataset("digits", variants=8, seed=0)``.

Each loader is a plain function whose keyword arguments are the data set's
options; the registry checks option names against that signature so a typo
gives a clear error instead of being silently ignored.
"""
import inspect

from datasets.core import Dataset, DatasetError, InputSpec
from datasets.digits import load_digits
from datasets.folder import load_folder
from datasets.mnist import load_mnist
from datasets.shapes import load_shapes

__all__ = ["Dataset", "DatasetError", "InputSpec", "available_datasets", "describe",
           "load_dataset", "options_of"]

_LOADERS = {
    "digits": load_digits,
    "folder": load_folder,
    "mnist": load_mnist,
    "shapes": load_shapes,
}


def available_datasets():
    """Sorted names accepted by ``load_dataset``."""
    return sorted(_LOADERS)


def describe(name):
    """One-line description of a data set (the first line of its loader's docstring)."""
    return inspect.getdoc(_loader(name)).splitlines()[0]


def options_of(name):
    """{option: default} for a data set; required options map to ``inspect.Parameter.empty``."""
    params = inspect.signature(_loader(name)).parameters.values()
    return {p.name: p.default for p in params}


def load_dataset(name, **options):
    """Loads data set ``name`` with ``options``; ``dataset.options`` reproduces it exactly.

    Raises:
      DatasetError: unknown name, unknown or missing option, bad option value,
        or unreadable files; the message says what was expected.
    """
    loader = _loader(name)
    accepted = options_of(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"data set {name!r} has no option {', '.join(unknown)}; "
            f"its options are: {_format_options(accepted)}")
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise DatasetError(
            f"data set {name!r} needs option {', '.join(missing)}, e.g. "
            f"load_dataset({name!r}, {missing[0]}=...) or `-o {missing[0]}=...` on the command line")
    return loader(**options)


def _loader(name):
    if name not in _LOADERS:
        raise DatasetError(
            f"unknown data set {name!r}; expected one of {', '.join(available_datasets())}")
    return _LOADERS[name]


def _format_options(accepted):
    return ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}"
                     for k, v in accepted.items())
