import os

import pytest

# One kernel cache per test session: kernels compile once and are shared by all tests, and a
# developer's own cache is never touched. Set before gconvgen reads it.
os.environ.setdefault("TVM_NUM_THREADS", "2")


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
