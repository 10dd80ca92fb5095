"""Full-int8 quantization and stage splitting: ``python -m quantize --help``.

Splitting (``tflitegraph.graph``, ``quantize.split``, ``quantize.stages``) needs only
the flatbuffer schema from ai-edge-litert; PTQ (``quantize.ptq``) needs TensorFlow.
"""

# One stage (the whole model on one Edge TPU) unless asked: the same for every command that cuts.
DEFAULT_STAGES = 1
