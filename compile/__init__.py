"""Compiles the stage .tflite files of a run folder for the Coral Edge TPU.

    python -m compile --run runs/<name> [--co-compile | --num-segments N]
    python -m compile check MODEL_OR_RUN [--json]

Runs Coral's ``edgetpu_compiler`` (x86-64 Linux, apt package edgetpu-compiler)
on each stage written by ``python -m quantize``, keeps its logs in
``runs/<name>/compiled/`` and records what it mapped to the Edge TPU in the
manifest. Without the compiler it records that the stages run on the CPU.
The compile step itself is standard library only (plus ``runfolder``); the
pre-flight check (``compile.preflight``, ``compile.opversions``) also needs numpy
and ai-edge-litert's flatbuffer schema, never TensorFlow, and is imported lazily.
"""
from compile.compiler import (
    COMPILER_NAME,
    DEFAULT_TIMEOUT,
    CompilerError,
    CompilerMissing,
    compile_options,
    compiler_version,
    find_compiler,
    run_compiler,
)
from compile.report import (
    format_size,
    parse_compilations,
    parse_compiler_output,
    parse_size,
)
from compile.run import OUT_DIR, compile_run

_PREFLIGHT = {"op_support": "compile.opcheck", "predict_placement": "compile.preflight",
              "check_model": "compile.preflight", "check_run": "compile.preflight",
              "warnings": "compile.preflight", "CheckError": "compile.preflight",
              "rewrite_op_versions": "compile.opversions"}


def __getattr__(name):
    """The pre-flight API, imported on first use so the compile step needs no numpy."""
    if name in _PREFLIGHT:
        import importlib
        return getattr(importlib.import_module(_PREFLIGHT[name]), name)
    raise AttributeError(f"module 'compile' has no attribute {name!r}")


__all__ = [
    "COMPILER_NAME", "DEFAULT_TIMEOUT", "OUT_DIR", "CheckError", "CompilerError",
    "CompilerMissing", "check_model", "check_run", "compile_options", "compile_run",
    "compiler_version", "find_compiler", "format_size", "op_support", "parse_compilations",
    "parse_compiler_output", "parse_size", "predict_placement", "rewrite_op_versions",
    "run_compiler", "warnings",
]
