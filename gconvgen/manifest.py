"""manifest.json: what a library holds (kernels by key), what it was built for, and its checksum.
Plain data and hashing only, so that the runtime loader can read it without the compiler."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {directory}: not a gconvgen library folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rebuild the library") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported manifest format {data.get('format') if isinstance(data, dict) else data!r}"
                         f" (this gconvgen reads format {FORMAT})")
    for field in ("library", "sha256", "target", "kernels"):
        if field not in data:
            raise ValueError(f"{path}: manifest lacks {field!r}")
    return data


def write(directory: Path, data: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path
