"""TVM's tensor intrinsics (`tvm.s_tir.tensor_intrin`), imported without TVMScript's frame lookups.

MetaSchedule's TuneContext and DLight's tensor-core GEMM import that module, which parses about 500
TVMScript functions. Each parse calls `inspect.stack()`, which finds every frame's source file, and
for a frame that has none (`<frozen importlib._bootstrap>`, `<string>`) scans all of `sys.modules`:
the import took 88 s on a 2-core EPYC, and every `gconvgen tune` paid it. The parser reads only the
frames' locals, so for this import `inspect.stack` walks the frames and looks up no source (6 s)."""
from __future__ import annotations

import inspect
import sys


def _frames_only(context: int = 1) -> list[inspect.FrameInfo]:
    frame, frames = sys._getframe(1), []
    while frame is not None:
        code = frame.f_code
        frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
        frame = frame.f_back
    return frames


def load() -> None:
    """Import tvm.s_tir.tensor_intrin (once per process) before anything of TVM's does."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    stack, inspect.stack = inspect.stack, _frames_only
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401 - registers the intrinsics
    finally:
        inspect.stack = stack
