"""Model builders. Block boundaries carry stable layer names so cuts can refer to them.

``splitnet`` is the network of the three-device tutorial (seed 000): three
blocks of stride-2 1x1 and 3x3 convolutions with batch norm and ReLU, ending in
a 1x1x10 reshape. ``rgbnet`` is a small colour model for ``shapes``/``folder``.
Both end in logits (no softmax): int8 logits keep more resolution for the
arg-max than an int8 softmax, and scores are a softmax at deploy time.
"""
from datasets.preprocess import PIXELS_0_1
from training.backbones import BACKBONES, BackboneError, build_backbone_model
from training.keras_setup import keras
from runfolder.errors import UserError

layers = keras.layers

# Named tensors at block ends: what `--cut-after` and the manifest refer to.
BOUNDARIES = {"splitnet": ["after_block1", "after_block2"],
              "rgbnet": ["after_block1", "after_block2"]}


class ModelError(UserError, ValueError):
    """Unknown model name or an input it cannot take."""


def _conv(x, filters, kernel, stride, name):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name)(x)


def _bn_relu(x, name, momentum=0.99):
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


def _head(x, classes, name="logits"):
    """1x1 maps reshape to logits as in the seed; larger maps are averaged first."""
    if x.shape[1] == 1 and x.shape[2] == 1:
        return layers.Reshape((classes,), name=name)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Reshape((classes,), name=name)(x)


def splitnet(input_shape=(28, 28, 1), classes=10):
    """The seed-000 network: block1 (28->7), block2 (7->4), block3 (4->1) then logits.

    One change from the seed: block3's first convolution has a ReLU, so the
    last two convolutions are not one linear map.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, 3, 1, 2, "block1_conv1")
    x = _bn_relu(_conv(x, 6, 3, 1, "block1_conv2"), "block1_relu2")
    x = _conv(x, 9, 1, 2, "block1_conv3")
    x = _bn_relu(_conv(x, 12, 3, 1, "block1_conv4"), "after_block1")
    x = _conv(x, 15, 1, 1, "block2_conv1")
    x = _bn_relu(_conv(x, 18, 3, 1, "block2_conv2"), "block2_relu2")
    x = _conv(x, 21, 1, 2, "block2_conv3")
    x = _bn_relu(_conv(x, 24, 3, 1, "block2_conv4"), "after_block2")
    x = _bn_relu(_conv(x, 27, 3, 2, "block3_conv1"), "block3_relu1")
    x = _conv(x, classes, 3, 2, "block3_conv2")
    return keras.Model(inputs, _head(x, classes), name="splitnet")


# BatchNorm momentum of rgbnet. Keras' default 0.99 lets the moving mean/variance (used at inference
# and folded into the int8 model) forget their start values (0 and 1) only after ~500 steps; shapes
# with 500 samples a class gave 22 steps an epoch, so after 8 epochs the moving variances were still
# several times the real batch variances and the model was at chance in inference mode (while its
# training-mode accuracy rose). 0.9 follows the batch statistics within ~50 steps.
RGBNET_BN_MOMENTUM = 0.9


def rgbnet(input_shape=(32, 32, 3), classes=4):
    """A small colour classifier of Edge TPU-friendly ops, in three named blocks.

    Each block is two stride-1 3x3 convolutions (BN folded, ReLU) and a 2x2 max pool, so thin
    strokes (rings, crosses, stripes) are seen at full resolution before any down-sampling; the
    block ends are the pools, ``after_block1`` and ``after_block2`` (the tensors a cut carries).
    """
    def conv(x, filters, block, index):
        x = _conv(x, filters, 3, 1, f"block{block}_conv{index}")
        return _bn_relu(x, f"block{block}_relu{index}", momentum=RGBNET_BN_MOMENTUM)

    def pool(x, name):  # "same": odd or tiny inputs (7x7 -> 4 -> 2 -> 1) still work
        return layers.MaxPooling2D(2, padding="same", name=name)(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(conv(inputs, 16, 1, 1), 16, 1, 2)
    x = pool(x, "after_block1")
    x = conv(conv(x, 32, 2, 1), 32, 2, 2)
    x = pool(x, "after_block2")
    x = conv(conv(x, 64, 3, 1), 64, 3, 2)
    x = conv(pool(x, "block3_pool"), 64, 3, 3)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, x, name="rgbnet")


MODELS = {"splitnet": splitnet, "rgbnet": rgbnet, **{name: None for name in BACKBONES}}
BOUNDARIES.update({name: list(backbone.boundaries) for name, backbone in BACKBONES.items()})
# (mean, std) each model's input is normalized with: model input = (pixels - mean) / std.
NORMALIZATION = {"splitnet": PIXELS_0_1, "rgbnet": PIXELS_0_1,
                 **{name: backbone.normalization for name, backbone in BACKBONES.items()}}
DEFAULT_BACKBONE = "mobilenet_v2"


def choose_model(input_shape):
    """(model name, why) for data of this shape: the seed's splitnet for small grey images, a MobileNetV2
    for colour or larger ones (rgbnet stays available with --model rgbnet)."""
    height, width, channels = input_shape
    if channels == 1 and max(height, width) <= 64:
        return "splitnet", f"grey {width}x{height} images"
    return DEFAULT_BACKBONE, f"{'colour' if channels == 3 else 'grey'} {width}x{height} images"


def is_backbone(name):
    return name in BACKBONES

MAIN_OUTPUT = "logits"


def exit_output_name(boundary):
    """The Keras output (and layer) name of the exit head at ``boundary`` ("/" in a backbone's layer names
    would open a TensorFlow name scope)."""
    return "exit_" + boundary.replace("/", "_")


def check_exits(model_name, exits):
    """Raises ModelError unless every exit names a boundary of the model, each once, in graph order."""
    boundaries = BOUNDARIES.get(model_name, [])
    unknown = [e for e in exits if e not in boundaries]
    if unknown:
        raise ModelError(f"--exits {','.join(unknown)}: not a boundary of {model_name}; choose from "
                         f"{', '.join(boundaries) or 'none (this model has no boundaries)'}")
    if len(set(exits)) != len(exits):
        raise ModelError(f"--exits lists a boundary twice: {','.join(exits)}")
    if list(exits) != sorted(exits, key=boundaries.index):
        raise ModelError(f"--exits {','.join(exits)} are not in graph order; list them as in "
                         f"{', '.join(boundaries)}")


def add_exits(model, exits, classes):
    """The same network with a small classifier head at each named boundary, as extra outputs.

    A head averages the boundary's feature map down to a 2x2 grid, then a
    dense layer maps it to logits (the seed's "pool" exit; a global average
    loses where strokes are, which early features need). It is cheap, runs
    on the stage that ends at the boundary, and uses Edge TPU ops only. The
    result stays a plain functional model (main output first) so tfmot can
    clone it for quantization-aware training.
    """
    outputs = [model.output]
    for boundary in exits:
        x = model.get_layer(boundary).output
        name = exit_output_name(boundary)
        pool = (max(1, x.shape[1] // 2), max(1, x.shape[2] // 2))
        x = layers.AveragePooling2D(pool, name=f"{name}_pool")(x)
        x = layers.Flatten(name=f"{name}_flatten")(x)
        outputs.append(layers.Dense(classes, name=name)(x))
    return keras.Model(model.input, outputs, name=model.name)


def check_model_name(name):
    """Raises ModelError for a name that is not a registered model."""
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; choose one of {', '.join(sorted(MODELS))}")


def build_model(name, input_shape, classes, exits=(), alpha=None, weights=None):
    """Builds a registered model for the data's input shape and class count, with exit heads if asked.

    ``alpha`` and ``weights`` are for backbones (training.backbones); the small models take neither.
    """
    check_model_name(name)
    if is_backbone(name):
        try:
            model = build_backbone_model(name, tuple(input_shape), classes, alpha, weights)
        except BackboneError as exc:
            raise ModelError(str(exc)) from None
    elif alpha is not None or weights is not None:
        raise ModelError(f"--alpha and --weights are for the backbones ({', '.join(BACKBONES)}), not {name}")
    else:
        model = MODELS[name](tuple(input_shape), classes)
    if exits:
        check_exits(name, exits)
        model = add_exits(model, exits, classes)
    return model
