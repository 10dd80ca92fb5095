"""Decoded images kept on disk as uint8 and read back a batch at a time.

A folder of 5,000 photos at 224 px is 750 MB decoded; held in memory (and stacked from a list, which
doubles it for a moment) that alone is most of a small machine. So each image is decoded once into
a cache file and read back by index with ``os.pread``: not a memory map, whose pages would count in
the process' memory as they are touched. The cache is keyed by the folder's file list (paths, sizes,
modification times) and the image size asked, so the quantize step and a second training reuse it
instead of decoding again; a changed folder gets a new cache.

The cache lives in ``$CORAL_STAGES_CACHE`` (default ``~/.cache/coral-stages``); delete it at will.
"""
import hashlib
import json
import os
import pathlib
import sys
import time

import numpy as np

CACHE_ENV = "CORAL_STAGES_CACHE"
FORMAT = 1   # bump when decoding changes what a cached image holds


def cache_root():
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "coral-stages")


class DiskImages:
    """A read-only uint8 array (N, H, W, C) in a file; ``images[indices]`` reads just those rows."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, path, shape):
        self.path, self.shape = str(path), tuple(int(n) for n in shape)
        self._row = int(np.prod(self.shape[1:]))
        expected = self._row * self.shape[0]
        if os.path.getsize(self.path) != expected:
            raise OSError(f"{self.path} holds {os.path.getsize(self.path)} bytes, not the {expected} of "
                          f"{self.shape[0]} images of {self.shape[1:]}")

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, tuple):   # images[k, :, :, 0]: the rows first, then the rest on them
            rows = self[index[0]]
            return rows[index[1:]] if isinstance(index[0], (int, np.integer)) else rows[(slice(None), *index[1:])]
        if isinstance(index, (int, np.integer)):
            return self[np.asarray([index])][0]
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        out = np.empty((len(rows),) + self.shape[1:], np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, row in enumerate(rows % max(1, len(self))):
                out[k] = np.frombuffer(os.pread(fd, self._row, int(row) * self._row), np.uint8).reshape(self.shape[1:])
        finally:
            os.close(fd)
        return out

    def __array__(self, dtype=None, copy=None):
        whole = self[np.arange(len(self))]
        return whole if dtype is None else whole.astype(dtype)


def folder_key(root, paths, spec):
    """A digest of what the decoded images depend on: the files (path, size, time) and the size asked."""
    digest = hashlib.sha256(json.dumps([FORMAT, os.path.abspath(root), list(spec)]).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def cached_decode(key, paths, shape, decode, error_types):
    """(DiskImages, kept, skipped): ``decode(path)`` of every path, each an array of ``shape``, kept on disk.

    ``kept`` are the indices into ``paths`` that decoded; ``skipped`` is [{"path", "reason"}] of those
    that raised one of ``error_types``. Decoding prints progress every few seconds on stderr.
    """
    folder = cache_root() / key
    index_file = folder / "index.json"
    if index_file.exists():
        try:
            index = json.loads(index_file.read_text())
            return DiskImages(folder / "images.u8", index["shape"]), index["kept"], index["skipped"]
        except (OSError, ValueError, KeyError, TypeError) as exc:   # a damaged cache is decoded again
            print(f"decoded-image cache {folder} is damaged ({exc}); decoding again", file=sys.stderr)
            index_file.unlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"images.u8.{os.getpid()}.partial"
        kept, skipped, last = [], [], time.monotonic()
        print(f"decoding {len(paths)} images once, into {folder}", file=sys.stderr, flush=True)
        with open(partial, "wb") as out:
            for n, path in enumerate(paths):
                try:
                    out.write(np.ascontiguousarray(decode(path), dtype=np.uint8).tobytes())
                    kept.append(n)
                except error_types as exc:
                    skipped.append({"path": path, "reason": str(exc)})
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    print(f"decoding images: {n + 1} of {len(paths)}", file=sys.stderr, flush=True)
        os.replace(partial, folder / "images.u8")
        shape = [len(kept), *shape]
        index_file.with_suffix(".tmp").write_text(json.dumps({"shape": shape, "kept": kept, "skipped": skipped}))
        os.replace(index_file.with_suffix(".tmp"), index_file)
    except OSError as exc:
        raise OSError(f"cannot write the decoded-image cache in {folder} ({exc}); set {CACHE_ENV} to a folder "
                      "with room for the images as uint8") from exc
    return DiskImages(folder / "images.u8", shape), kept, skipped
