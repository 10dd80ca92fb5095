"""tflitegraph."""
