"""gconvgen: tuned kernels for group, depthwise and pointwise convolution and channel shuffle."""
from __future__ import annotations

__version__ = "0.1.0"

from .spec import KernelSpec  # noqa: E402

__all__ = ["KernelSpec", "__version__"]
