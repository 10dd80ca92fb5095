"""Training batches: uint8 images stay uint8 in memory and become model inputs a batch at a time.

A data set of 5,000 photos at 224x224 is 750 MB as uint8 and 3 GB as float32; only the batches in
flight are float here. Augmentation (``--augment``) runs on the training batches in the input
pipeline, never in the model, so the exported int8 model holds no augmentation ops.

    train = batches(images, labels, splits["train"], 64, (128.0, 128.0), augment=("flip", "zoom"), seed=0)
    model.fit(train, validation_data=batches(images, labels, splits["val"], 64, (128.0, 128.0)))
"""
import numpy as np

from training.keras_setup import keras, tf
from runfolder.errors import UserError

AUGMENTATIONS = ("flip", "rotate", "zoom", "contrast", "translate")
PRESETS = {"light": ("flip", "translate"), "photos": ("flip", "rotate", "zoom", "contrast", "translate")}


class AugmentError(UserError, ValueError):
    """An --augment list names something unknown."""


def parse_augment(text):
    """("flip", ...) from "flip,zoom" or a preset name ("light", "photos"); () from None or "none"."""
    if not text or text == "none":
        return ()
    names = PRESETS.get(text) or tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise AugmentError(f"--augment {text!r}: unknown {', '.join(unknown)}; choose from "
                           f"{', '.join(AUGMENTATIONS)}, or a preset: {', '.join(PRESETS)}")
    return names


def _augmenter(names, seed):
    """The random transforms of ``names`` as one Keras pipeline on float pixels 0..255 (training only)."""
    layers = keras.layers
    make = {"flip": lambda: layers.RandomFlip("horizontal", seed=seed),
            "rotate": lambda: layers.RandomRotation(0.05, fill_mode="reflect", seed=seed),
            "zoom": lambda: layers.RandomZoom(0.15, fill_mode="reflect", seed=seed),
            "contrast": lambda: layers.RandomContrast(0.2, seed=seed),
            "translate": lambda: layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed)}
    return keras.Sequential([make[name]() for name in names], name="augment")


def batches(images, labels, indices, batch_size, normalization, augment=(), seed=None, outputs=1):
    """A tf.data.Dataset of (inputs, labels) over ``images[indices]``; shuffled when ``seed`` is given.

    Args:
      images: uint8 (N, H, W, C), read by index a batch at a time (no copy of the whole array).
      normalization: (mean, std): inputs = (pixels - mean) / std, after augmentation.
      augment: names from AUGMENTATIONS, applied to these batches only.
      outputs: how many model outputs take the labels (a model with exit heads has several).
    """
    indices = np.asarray(indices, dtype=np.int64)
    height, width, channels = images.shape[1:]
    mean, std = (np.float32(v) for v in normalization)

    def take(chosen):
        return images[chosen], labels[chosen].astype(np.int64)

    def load(chosen):
        pixels, y = tf.numpy_function(take, [chosen], (tf.uint8, tf.int64))
        pixels.set_shape((None, height, width, channels))
        y.set_shape((None,))
        return tf.cast(pixels, tf.float32), y

    data = tf.data.Dataset.from_tensor_slices(indices)
    if seed is not None:
        data = data.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        augmenter = _augmenter(augment, seed)
        data = data.map(lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y),
                        num_parallel_calls=tf.data.AUTOTUNE)
    data = data.map(lambda x, y: ((x - mean) / std, tuple([y] * outputs) if outputs > 1 else y))
    return data.prefetch(tf.data.AUTOTUNE)
