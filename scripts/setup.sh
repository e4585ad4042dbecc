#!/usr/bin/env bash
# Creates .venv with everything gconvgen needs; does nothing when it is already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.gconvgen-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# The CPU build of torch first, pinned: an unpinned torch would pull a CUDA build of several GB.
"$py" -m pip install -q "torch==2.13.0"
# apache-tvm-ffi is pinned to 0.1.14.post1 in pyproject.toml: 0.1.15.x segfaults in save_json.
"$py" -m pip install -q -e ".[test]"
# The aarch64 cross compiler builds ARM bundles; qemu-user runs their kernels here to check them.
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
      || echo "setup: could not install ${need[*]}; ARM builds or their emulated checks will be unavailable" >&2
  else
    echo "setup: ${need[*]} not installed; ARM builds or their emulated checks will be unavailable" >&2
  fi
fi
echo "$want" > "$stamp"
