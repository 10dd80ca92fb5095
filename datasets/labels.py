"""Class labels: read from a label file, kept in the manifest, shown by every step that names a class.

Two formats are read, as label files come: one label a line (line k is class k, e.g. Coral's
``imagenet_labels.txt`` starting with ``background``), or ``N label`` a line (``0 cat``, ``1: dog``,
as Coral's ``*_labels.txt``), where missing indices are named by their number.
"""
import os
import re
from runfolder.errors import UserError

_NUMBERED = re.compile(r"^\s*(\d+)[\s:,]+(.*\S)\s*$")


class LabelsError(UserError, ValueError):
    """A label file cannot be read; the message says what is wrong."""


def read_labels(path):
    """The class names in ``path``, in class order."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"label file {path} cannot be read ({exc}); give a text file with one label a line "
                          "or 'N label' a line") from exc
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise LabelsError(f"label file {path} is empty; give one label a line or 'N label' a line")
    numbered = [_NUMBERED.match(line) for line in lines]
    if all(numbered):
        found = {}
        for match in numbered:
            index = int(match.group(1))
            if index in found:
                raise LabelsError(f"label file {path} names class {index} twice ({found[index]!r} and "
                                  f"{match.group(2)!r}); each number once")
            found[index] = match.group(2)
        return [found.get(k, str(k)) for k in range(max(found) + 1)]
    return [line.strip() for line in lines]


def labels_of(manifest):
    """The run's class names: a label file's (``labels``), else the training data set's; None if neither."""
    manifest = manifest or {}
    return (manifest.get("labels") or {}).get("names") or (manifest.get("dataset") or {}).get("class_names")


def label_record(path, names):
    """The manifest's ``labels`` section for names read from ``path`` (kept as an absolute path, so a command
    that remakes the run can name the file from anywhere)."""
    return {"source": os.path.abspath(path), "names": list(names)}


def name_of(names, index):
    """The label of class ``index``, or the index as text when there is none."""
    return names[index] if names and 0 <= index < len(names) else str(index)
