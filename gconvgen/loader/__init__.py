"""What a bundle ships to run gconvgen kernels on a board: `gconvgen_loader.py` (Python, on tvm-ffi
and libtvm_runtime, nothing else), `gconvgen_run.c` (the same through tvm-ffi's C ABI) and its Makefile.
gconvgen itself imports the Python loader from here, so there is one copy of it."""
