"""Inception v1 and v4 as TF-slim builds them (the models Coral compiled: inception_v1_224_quant,
inception_v4_299_quant), for bench/edgetpu_model.py: tf_keras.applications has neither. Batch norm is
folded into each convolution's bias, as the converter does, so a convolution here has a bias and a
ReLU. Checked by parameter count against the published ones (6.6 M and 42.7 M with 1001 classes).
"""


def _conv(layers, x, filters, kernel, strides=1, padding="same"):
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation="relu")(x)


def inception_v1(keras, size=224, classes=1001):
    """GoogLeNet as slim's inception_v1 (no auxiliary heads; 3x3 where the paper has 5x5)."""
    layers = keras.layers
    image = x = keras.Input((size, size, 3), batch_size=1)
    x = _conv(layers, x, 64, 7, 2)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = _conv(layers, _conv(layers, x, 64, 1), 192, 3)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)

    def mixed(x, a, b1, b2, c1, c2, d):
        pool = _conv(layers, layers.MaxPooling2D(3, 1, padding="same")(x), d, 1)
        return layers.Concatenate()([_conv(layers, x, a, 1), _conv(layers, _conv(layers, x, b1, 1), b2, 3),
                                     _conv(layers, _conv(layers, x, c1, 1), c2, 3), pool])
    x = mixed(mixed(x, 64, 96, 128, 16, 32, 32), 128, 128, 192, 32, 96, 64)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for args in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                 (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)):
        x = mixed(x, *args)
    x = layers.MaxPooling2D(2, 2, padding="same")(x)
    x = mixed(mixed(x, 256, 160, 320, 32, 128, 128), 384, 192, 384, 48, 128, 128)
    x = layers.AveragePooling2D(x.shape[1])(x)
    x = layers.Conv2D(classes, 1)(x)
    return keras.Model(image, layers.Softmax()(layers.Flatten()(x)))


def inception_v4(keras, size=299, classes=1001):
    """Inception v4 (Szegedy et al. 2016) as slim's inception_v4, without the auxiliary head."""
    layers = keras.layers

    def conv(x, filters, kernel, strides=1, padding="same"):
        return _conv(layers, x, filters, kernel, strides, padding)

    def chain(x, *specs):
        for spec in specs:
            x = conv(x, *spec)
        return x
    image = x = keras.Input((size, size, 3), batch_size=1)
    x = chain(x, (32, 3, 2, "valid"), (32, 3, 1, "valid"), (64, 3))
    x = layers.Concatenate()([layers.MaxPooling2D(3, 2)(x), conv(x, 96, 3, 2, "valid")])
    x = layers.Concatenate()([chain(x, (64, 1), (96, 3, 1, "valid")),
                              chain(x, (64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, "valid"))])
    x = layers.Concatenate()([conv(x, 192, 3, 2, "valid"), layers.MaxPooling2D(3, 2)(x)])
    for _ in range(4):
        pool = conv(layers.AveragePooling2D(3, 1, padding="same")(x), 96, 1)
        x = layers.Concatenate()([conv(x, 96, 1), chain(x, (64, 1), (96, 3)), chain(x, (64, 1), (96, 3), (96, 3)),
                                  pool])
    x = layers.Concatenate()([conv(x, 384, 3, 2, "valid"), chain(x, (192, 1), (224, 3), (256, 3, 2, "valid")),
                              layers.MaxPooling2D(3, 2)(x)])
    for _ in range(7):
        pool = conv(layers.AveragePooling2D(3, 1, padding="same")(x), 128, 1)
        x = layers.Concatenate()([conv(x, 384, 1), chain(x, (192, 1), (224, (1, 7)), (256, (7, 1))),
                                  chain(x, (192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))),
                                  pool])
    x = layers.Concatenate()([chain(x, (192, 1), (192, 3, 2, "valid")),
                              chain(x, (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, "valid")),
                              layers.MaxPooling2D(3, 2)(x)])
    for _ in range(3):
        b = conv(x, 384, 1)
        c = chain(x, (384, 1), (448, (3, 1)), (512, (1, 3)))
        pool = conv(layers.AveragePooling2D(3, 1, padding="same")(x), 256, 1)
        x = layers.Concatenate()([conv(x, 256, 1), conv(b, 256, (1, 3)), conv(b, 256, (3, 1)),
                                  conv(c, 256, (1, 3)), conv(c, 256, (3, 1)), pool])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Softmax()(layers.Dense(classes)(x)))
