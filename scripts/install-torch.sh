#!/usr/bin/env bash
# Install torch into the active environment, the build that fits this machine, without hanging anywhere:
# - with an NVIDIA GPU (nvidia-smi answers): the CUDA build, which is what PyPI serves for Linux;
# - otherwise: the CPU build from PyTorch's CPU index (a small download instead of several GB of CUDA
#   libraries), tried with a short timeout and no retries; where that index cannot be reached, the
#   indexes pip is configured with (which may hold a CPU wheel, as on machines with a local mirror).
# An installed torch of the pinned version is kept as it is.
set -euo pipefail
version="${TORCH_VERSION:-2.13.0}"
if python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$version' else 1)" 2>/dev/null; then
    exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install-torch: NVIDIA GPU found: torch $version with CUDA" >&2
    exec pip install -q "torch==$version"
fi
echo "install-torch: no NVIDIA GPU: torch $version for CPUs" >&2
if pip install -q --timeout 15 --retries 0 --index-url https://download.pytorch.org/whl/cpu "torch==$version" 2>/dev/null; then
    exit 0
fi
echo "install-torch: PyTorch's CPU index not reachable; using pip's configured indexes" >&2
exec pip install -q "torch==$version"
