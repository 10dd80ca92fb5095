"""Compiles the stage .tflite files of a run folder for the Coral Edge TPU.

    python -m compile --run runs/<name> [--co-compile | --num-segments N]
    python -m compile check MODEL_OR_RUN [--json]

Runs Coral's ``edgetpu_compiler`` (x86-64 Linux, apt package edgetpu-compiler)
on each stage written by ``python -m quantize``, keeps its logs in
``runs/<name>/compiled/`` and records what it mapped to the Edge TPU in the
manifest. Without the compiler it records that the stages run on the CPU.
The compile step itself is standard library only (plus ``runfolder``); the
pre-flight check (``compile.preflight.check``, ``compile.preflight.opversions``) also needs numpy
and ai-edge-litert's flatbuffer schema, never TensorFlow, and is imported lazily.
"""
from compile.compiler import (
    COMPILER_NAME,
    DEFAULT_TIMEOUT,
    CompilerError,
    CompilerFlags,
    CompilerMissing,
    compile_options,
    compiler_version,
    find_compiler,
    run_compiler,
)
from compile.compiler_log import (
    format_size,
    parse_compilations,
    parse_compiler_output,
    parse_size,
)
from compile.compile_run import OUT_DIR, compile_run

__all__ = [
    "COMPILER_NAME", "DEFAULT_TIMEOUT", "OUT_DIR", "CompilerError", "CompilerFlags", "CompilerMissing", "compile_options",
    "compile_run", "compiler_version", "find_compiler", "format_size", "parse_compilations",
    "parse_compiler_output", "parse_size", "run_compiler",
]
