"""Where gconvgen's files live: the source tree (targets/, tune_logs/) and the user's cache."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# targets/ and tune_logs/ sit beside the package in the source tree (an editable install).
ROOT = Path(os.environ.get("GCONVGEN_HOME", PACKAGE_DIR.parent))
TARGETS_DIR = ROOT / "targets"
TUNE_LOGS_DIR = ROOT / "tune_logs"
SUITES_DIR = PACKAGE_DIR / "suites"


def cache_dir() -> Path:
    """Compiled kernels, reused across runs: $GCONVGEN_CACHE or ~/.cache/gconvgen."""
    base = os.environ.get("GCONVGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "gconvgen")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
