#!/usr/bin/env bash
# One GPU-machine call: golden fixtures (HF transformers + peft), the reverse interop check of an adapter saved by
# Peft.Native, a kernel compile with the machine's nvcc, and the peer timings. Results land in $OUT (or ./gpu-out).
# Usage (device tool, carrying tests/fixtures/csharp-adapter):  bash bench/gpu/fixtures_and_peers.sh
# (FIXTURES_ONLY=1 stops after the fixtures.)
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0  # peft writes target_modules from a set: fixed hashing, stable files
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
nvcc --version | tail -n 2 | tee -a "$out/device.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$out/device.txt"

echo "== fixtures"
python3 tests/fixtures/make_fixtures.py 2>&1 | tee "$out/fixtures.log"
tar -czf "$out/fixtures.tar.gz" --exclude='__pycache__' --exclude='csharp-adapter' -C tests fixtures

if [ "${FIXTURES_ONLY:-0}" = 1 ]; then exit 0; fi  # FIXTURES_ONLY=1: the fixtures alone

echo "== Python peft loads the adapter Peft.Native saved"
python3 tests/fixtures/check_csharp_adapter.py 2>&1 | tee "$out/check_csharp_adapter.log"

echo "== kernels with nvcc $(nvcc --version | grep -o 'release [0-9.]*')"
cmake -S . -B /tmp/kbuild -DPEFT_REQUIRE_NVCC=ON > /dev/null && cmake --build /tmp/kbuild 2>&1 | tail -n 3

echo "== peers"
python3 bench/gpu/hf_peers.py --json "$out/hf_peers.json" 2>&1 | tee "$out/hf_peers.log"
