import os

import pytest

# One kernel cache per test session: kernels compile once and are shared by all tests, and a
# developer's own cache is never touched. Set before gconvgen reads it.
os.environ.setdefault("TVM_NUM_THREADS", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on CI's 2 cores: spinning thread pools (TVM's after each kernel,
    # torch's OpenMP after each op) would each steal the other worker's core, and one timing test saw
    # a kernel run 20x slower. Idle threads sleep instead; set before TVM or torch starts its pool.
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("gconvgen-cache")
    old = os.environ.get("GCONVGEN_CACHE")
    os.environ["GCONVGEN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GCONVGEN_CACHE", None)
    else:
        os.environ["GCONVGEN_CACHE"] = old


@pytest.fixture(scope="session")
def host():
    from gconvgen import targets
    return targets.load("host")
