"""The run folder: one directory per run, described by a versioned ``manifest.json``.

Every step (training, quantize, compile, deploy) reads what earlier steps wrote
here, checks file hashes, and adds its own section. Standard library only, so the
deploy side can use it on a Pi.
"""
from runfolder.manifest import (
    SCHEMA_VERSION,
    ManifestError,
    StepOrderError,
    drop_after,
    file_record,
    load,
    require,
    resolve,
    restage_command,
    save,
    sha256_of,
    verify_file,
)

__all__ = [
    "SCHEMA_VERSION", "ManifestError", "StepOrderError", "drop_after", "file_record", "load",
    "require", "resolve", "restage_command", "save", "sha256_of", "verify_file",
]
