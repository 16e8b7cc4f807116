"""The digest a backup's manifest records, and the check of a file against it.

BLAKE3 is the default: SIMD on every x86-64 and ARM CPU, so it runs at
several GB/s with or without SHA extensions, where SHA-256 falls to about
220-400 MB/s and would be slower than the copy it checks. Manifests written
before (with a top-level "sha256") still verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import blake3

ALGORITHM = "blake3"
ALGORITHMS = ("blake3", "sha256")
_CHUNK = 1 << 20


@dataclass
class Digest:
    algorithm: str  # "blake3", or "sha256" in manifests written before it
    value: str  # lowercase hex


def hasher(algorithm: str = ALGORITHM):
    """A new hasher; both kinds let go of the GIL while they hash a large block."""
    if algorithm == "blake3":
        return blake3.blake3()
    if algorithm == "sha256":  # only to check old manifests: OpenSSL is not loaded otherwise
        import hashlib
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r} (this version knows "
                     f"{', '.join(ALGORITHMS)})")


def of_file(path: Path, algorithm: str = ALGORITHM) -> Digest:
    """The digest of a whole file, read once."""
    h = hasher(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


def in_manifest(manifest: dict) -> Digest | None:
    """The digest a manifest records: {"digest": {"algorithm", "value"}}, or an older "sha256"."""
    recorded = manifest.get("digest")
    if isinstance(recorded, dict):
        return Digest(str(recorded.get("algorithm")), str(recorded.get("value")))
    if isinstance(manifest.get("sha256"), str):
        return Digest("sha256", manifest["sha256"])
    return None
