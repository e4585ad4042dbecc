"""manifest.json: what a library holds (kernels by key), what it was built for, and its checksum.
Reading and hashing live in the bundle's loader (gconvgen/loader/gconvgen_loader.py), which boards run
without gconvgen; writing lives here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .loader.gconvgen_loader import FORMAT, MANIFEST, read_manifest as read, sha256

__all__ = ["FORMAT", "MANIFEST", "read", "sha256", "write"]


def write(directory: Path, data: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path
