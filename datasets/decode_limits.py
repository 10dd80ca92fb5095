"""Bounds on what decoding an image may cost, checked from its header before any pixel is decoded.

A compressed file is small; its pixels are not: a 13000x13000 PNG of a few hundred kB decodes
to 676 MB of RGBA. ``load_image`` reads the header, refuses more than ``max_pixels``, and
decodes under a ``DecodeBudget`` when one is given, so concurrent requests together never
hold more than the budget in decoded pixels (the HTTP API gives every request the same one).
"""
import contextlib
import ctypes
import ctypes.util
import threading

MAX_IMAGE_PIXELS = 4096 * 4096        # 16.8 megapixels: any camera photo resized by a phone, not a bomb
# JPEG opens MPO too; not EPS, whose plugin runs Ghostscript
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

TRIM_FROM = 8 << 20   # decodes at least this large give their freed memory back before the budget moves on


def _libc_malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def give_back_freed_memory():
    """Returns freed heap memory of every malloc arena to the system. Pillow holds an image in 16 MB
    blocks, which glibc keeps in the freeing thread's arena: without this, each request thread kept
    one decode's worth resident, and four threads decoding in turn peaked at +182 MiB where the
    budget allows +128 (tests/test_hostile_images.py)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class DecodeBusy(RuntimeError):
    """Decoding must wait for memory that other requests hold; retry later (the API answers 503)."""


def decoded_bytes(mode, width, height):
    """Bytes Pillow holds for an image of this mode and size."""
    if mode in ("I", "F"):
        per_pixel = 4
    elif mode.startswith("I;16"):
        per_pixel = 2
    elif mode in ("1", "L", "P"):
        per_pixel = 1
    else:
        per_pixel = 4       # Pillow stores every multi-band mode (RGB too) in 4 bytes a pixel
    return width * height * per_pixel


def decode_cost(mode, width, height, target_mode, convert):
    """Peak bytes of decoding plus converting: the decoded image, the copies conversion makes."""
    cost = decoded_bytes(mode, width, height)
    if convert and mode != target_mode:
        if mode in ("P", "PA", "LA"):
            cost += decoded_bytes("RGBA", width, height)
        if mode.startswith("I"):
            cost += width * height * 8 + decoded_bytes("L", width, height)   # float64 rescale, then 8-bit
        cost += decoded_bytes(target_mode, width, height)
    return cost


class DecodeBudget:
    """At most ``max_bytes`` of decoded pixels at once across threads; a decode that does not fit waits
    up to ``wait_s`` for others to finish, then raises DecodeBusy.

        budget = DecodeBudget(2 * decoded_bytes("RGBA", 4096, 4096))
        with budget.reserve(cost):
            image.load()
    """

    def __init__(self, max_bytes, wait_s=10.0):
        self.max_bytes, self.wait_s = int(max_bytes), wait_s
        self.in_use = self.peak = 0
        self._cond = threading.Condition()

    @classmethod
    def for_pixels(cls, max_pixels=MAX_IMAGE_PIXELS, wait_s=10.0):
        """Room for two of the largest allowed images (RGBA): one decoding while another converts."""
        return cls(2 * decoded_bytes("RGBA", max_pixels, 1), wait_s)

    @contextlib.contextmanager
    def reserve(self, nbytes):
        nbytes = min(int(nbytes), self.max_bytes)   # one image larger than the budget runs alone
        with self._cond:
            if not self._cond.wait_for(lambda: self.in_use + nbytes <= self.max_bytes, timeout=self.wait_s):
                raise DecodeBusy(f"busy: decoding this image needs {nbytes / 2**20:.0f} MiB and other requests "
                                 f"hold {self.in_use / 2**20:.0f} of {self.max_bytes / 2**20:.0f} MiB; retry later")
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            if nbytes >= TRIM_FROM:
                give_back_freed_memory()
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


class DecodeLimits:
    """What one process allows: ``max_pixels`` per image, and one ``budget`` shared by its threads."""

    def __init__(self, max_pixels=MAX_IMAGE_PIXELS, wait_s=10.0):
        if max_pixels < 1:
            raise ValueError(f"the pixel limit must be at least 1, got {max_pixels}")
        self.max_pixels = int(max_pixels)
        self.budget = DecodeBudget.for_pixels(self.max_pixels, wait_s)
