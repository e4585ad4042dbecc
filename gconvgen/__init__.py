"""gconvgen: tuned kernels for group, depthwise and pointwise convolution and channel shuffle."""
from __future__ import annotations

__version__ = "0.1.0"

from .spec import KernelSpec  # noqa: E402


def convert(model, inplace: bool = False, trace: bool = True, torch_threads: int | None = 1):
    """`model` with gconvgen's kernels for its grouped/depthwise/pointwise convs and channel shuffles
    (BatchNorm and activations folded in eval mode); see gconvgen.conversion."""
    from .conversion import convert as _convert
    return _convert(model, inplace=inplace, trace=trace, torch_threads=torch_threads)


def compile(model, torch_threads: int | None = 1, **options):
    """torch.compile(model, **options) of a converted model, with torch's own ops and Inductor's
    kernels held to torch_threads (ours keep every core); see gconvgen.conversion.compile."""
    from .conversion import compile as _compile
    return _compile(model, torch_threads=torch_threads, **options)


__all__ = ["KernelSpec", "compile", "convert", "__version__"]
