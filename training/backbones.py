"""Standard backbones from ``tf_keras.applications`` with a classification head, for transfer learning.

Each is built into one flat functional model (the backbone's layers are the model's own layers), so
its block ends can be named for ``--cut-after`` and ``--exits``, and the head is
global average pooling, dropout and a dense ``logits`` layer. Inputs are RGB in [-1, 1) as
(pixels - 128) / 128, the way Coral's MobileNets take them: the full-int8 model's uint8 input is
then the raw pixels (scale 1/128, zero point 128). MobileNetV3 is built in its minimalistic form
(ReLU instead of hard-swish, no squeeze-excite), the one the Edge TPU runs. EfficientNet B0 takes
pixels 0..255 and scales them itself; the pre-flight check maps all of its ops (swish as LOGISTIC
and MUL, squeeze-excite's MEAN), where MobileNetV3's hard-swish form leaves all but 2 of 107 on
the CPU (bench/zoo_preflight.py --candidates), so that form is left out.

Weights: ``"imagenet"`` (Keras downloads them; needs internet), a path to a weights file of the
backbone without its top (``save_weights`` of ``include_top=False``, or Keras' ``..._no_top.h5``
file downloaded by hand: the way to work offline), or ``None`` (random).
"""
import dataclasses
import os

from datasets.preprocess import PIXELS_0_255, PIXELS_MINUS1_1
from training.keras_setup import keras
from runfolder.errors import UserError

applications = keras.applications


@dataclasses.dataclass(frozen=True)
class Backbone:
    build: object             # (input tensor, alpha, weights) -> keras.Model without its top
    boundaries: tuple         # layer names at block ends, 1/4, 1/8, 1/16 and 1/32 of the input size
    alphas: tuple             # width multipliers Keras builds
    min_size: int = 32
    normalization: tuple = PIXELS_MINUS1_1   # (mean, std): model input = (pixels - mean) / std


def _shape(inputs):
    """Given with the input tensor, so Keras picks the imagenet weights trained at this resolution."""
    return tuple(inputs.shape[1:])


def _v1(inputs, alpha, weights):
    return applications.MobileNet(input_tensor=inputs, input_shape=_shape(inputs),
        include_top=False, weights=weights, alpha=alpha)


def _v2(inputs, alpha, weights):
    return applications.MobileNetV2(input_tensor=inputs, input_shape=_shape(inputs),
        include_top=False, weights=weights, alpha=alpha)


def _v3_small(inputs, alpha, weights):
    return applications.MobileNetV3Small(input_tensor=inputs, input_shape=_shape(inputs),
        include_top=False, weights=weights, alpha=alpha, minimalistic=True, include_preprocessing=False)


def _v3_large(inputs, alpha, weights):
    return applications.MobileNetV3Large(input_tensor=inputs, input_shape=_shape(inputs),
        include_top=False, weights=weights, alpha=alpha, minimalistic=True, include_preprocessing=False)


def _efficientnet_b0(inputs, alpha, weights):
    # Keras' EfficientNet scales and normalizes inside the model: it takes pixels 0..255 as they are.
    return applications.EfficientNetB0(input_tensor=inputs, input_shape=_shape(inputs), include_top=False,
                                       weights=weights)


BACKBONES = {
    "mobilenet_v1": Backbone(_v1, ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
                             (0.25, 0.5, 0.75, 1.0)),
    "mobilenet_v2": Backbone(_v2, ("block_2_add", "block_5_add", "block_12_add", "block_15_add"),
                             (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
    "mobilenet_v3_small": Backbone(_v3_small, ("expanded_conv/project/BatchNorm", "expanded_conv_2/Add",
                                               "expanded_conv_7/Add", "expanded_conv_10/Add"), (0.75, 1.0)),
    "mobilenet_v3_large": Backbone(_v3_large, ("expanded_conv_2/Add", "expanded_conv_5/Add", "expanded_conv_11/Add",
                                               "expanded_conv_14/Add"), (0.75, 1.0)),
    "efficientnet_b0": Backbone(_efficientnet_b0, ("block2b_add", "block3b_add", "block5c_add", "block6d_add"),
                                (1.0,), normalization=PIXELS_0_255),
}
DEFAULT_ALPHA = {"mobilenet_v1": 0.25, "mobilenet_v2": 0.35, "mobilenet_v3_small": 1.0, "mobilenet_v3_large": 1.0,
                 "efficientnet_b0": 1.0}
HEAD_LAYERS = ("pool", "dropout", "logits")


class BackboneError(UserError, ValueError):
    """A backbone cannot be built as asked; the message says what to change."""


def build_backbone_model(name, input_shape, classes, alpha=None, weights=None):
    """The backbone ``name`` with a head of ``classes`` logits, on (H, W, 3) inputs in [-1, 1)."""
    backbone = BACKBONES[name]
    alpha = DEFAULT_ALPHA[name] if alpha is None else float(alpha)
    height, width, channels = input_shape
    if channels != 3:
        raise BackboneError(f"{name} takes RGB images, the data has {channels} channel(s); use the data set's "
                            "colour option (e.g. -o channels=3) or --model splitnet for grey images")
    if min(height, width) < backbone.min_size:
        raise BackboneError(f"{name} needs images of at least {backbone.min_size}x{backbone.min_size}, the data "
                            f"has {width}x{height}; pass --input-size {max(96, backbone.min_size)} (or a larger "
                            "-o size=)")
    if alpha not in backbone.alphas:
        raise BackboneError(f"--alpha {alpha:g} is not built for {name}; choose one of "
                            f"{', '.join(f'{a:g}' for a in backbone.alphas)}")
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise BackboneError(f"--weights {weights}: no such file; give a weights file of {name} without its top "
                            "(.h5), 'imagenet' (downloads them) or 'none'")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    try:
        base = backbone.build(inputs, alpha, weights)
    except (ValueError, OSError) as exc:
        raise BackboneError(f"{name} (alpha {alpha:g}, weights {weights or 'none'}) cannot be built: {exc}") from exc
    except Exception as exc:   # keras.utils.get_file raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise BackboneError(f"the imagenet weights of {name} could not be downloaded ({exc}); on a machine "
                            "without internet, copy Keras' '..._no_top.h5' file of this backbone and alpha here "
                            "and pass --weights PATH") from exc
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def set_trainable(model, fine_tune_layers):
    """Freezes the backbone but its top ``fine_tune_layers`` layers (0: head only). BatchNormalization
    layers stay frozen, which in tf_keras also keeps them in inference mode: their statistics, learnt
    on a large data set, are not overwritten by small batches of the user's photos."""
    body = [layer for layer in model.layers if layer.name not in HEAD_LAYERS and layer.weights]
    open_from = len(body) - max(0, int(fine_tune_layers))
    for k, layer in enumerate(body):
        layer.trainable = k >= open_from and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for layer in body if layer.trainable)
