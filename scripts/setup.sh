#!/usr/bin/env bash
# Installs everything int4kv's build and tests need on Debian 12, from Debian's archive only.
# Idempotent: packages already present are left alone; safe to run any number of times.
# The CUDA toolkit is expected at /usr/local/cuda (nvcc is needed to build; a GPU is not).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, WORKSPACE mode
  g++
  libgrpc++-dev
  protobuf-compiler-grpc   # grpc_cpp_plugin
  libprotobuf-dev
  protobuf-compiler
  libabsl-dev
  libspdlog-dev
  libfmt-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  openssl                  # TLS tests generate a certificate at test time
  xz-utils                 # tools/gpu_pack.sh (and its test)
  git                      # tools/bench_at_refs.sh (and its test)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    continue
  fi
  missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#PACKAGES[@]} packages already installed; nothing to do."
else
  # Root or sudo only when something is missing, so that a set-up machine passes as any user.
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "setup.sh: not root and no sudo; install as root: ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "setup.sh: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  echo "setup.sh: installed ${missing[*]}"
fi

# WORKSPACE's local_cuda repository points at /usr/local/cuda, and every binary links the CUDA
# runtime (it runs on the CPU without a GPU), so without the toolkit nothing builds.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup.sh: CUDA toolkit: $(/usr/local/cuda/bin/nvcc --version | tail -n 2 | head -n 1)"
else
  echo "setup.sh: /usr/local/cuda/bin/nvcc not found: the build needs a CUDA 12 toolkit at" \
    "/usr/local/cuda (WORKSPACE's local_cuda; every target links its runtime, no GPU needed)." >&2
  exit 1
fi
# Debian's bazel-bootstrap reports "bazel no_version"; the package names its version.
echo "setup.sh: bazel: $(dpkg-query -W -f='${Version}' bazel-bootstrap 2>/dev/null || echo missing)"
