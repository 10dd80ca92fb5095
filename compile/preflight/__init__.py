"""Pre-flight: where edgetpu_compiler 16.0 will put each op, without the compiler and without TensorFlow.

``optable`` (Coral's table of operations), ``opcheck`` (one op against it), ``placement`` (the compiler's
stop at the first unsupported op), ``opversions`` (op versions the compiler refuses, lowered where safe),
``check`` (a model's or run's whole report), ``checktext`` (that report as text). Reads models through
``tflitegraph``; imports nothing of ``quantize``.
"""
from compile.preflight.check import CheckError, check_model, check_run, predict_placement, warnings
from compile.preflight.opcheck import op_support
from compile.preflight.opversions import rewrite_op_versions

__all__ = ["CheckError", "check_model", "check_run", "op_support", "predict_placement", "rewrite_op_versions",
           "warnings"]
