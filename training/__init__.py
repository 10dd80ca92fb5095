"""Train a Keras (tf_keras) classifier into a run folder: ``python -m training --help``.

Import ``training.train`` / ``training.models`` directly; this package stays
light so ``--help`` does not load TensorFlow.
"""
