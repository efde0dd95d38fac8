#!/usr/bin/env bash
# Runs the CUDA code on the host emulation (native/emulation; built by CMake into build/emulation): the kernels'
# native checks (bench_kernels) and Peft.Cuda.Tests — the [Category("Gpu")] suite — with Peft.Cuda bound to the
# stand-in driver and cuBLAS. It checks what the kernels and the C# launchers compute on a machine without a GPU; it
# is not a GPU run (the device names itself "host emulation (not a GPU)") and says nothing about speed.
# Ends with "host emulation of CUDA: N passed, N failed, N skipped"; exit code 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=$PWD/build/emulation/libpeft_cuda_emulated.so
[ -f "$lib" ] && [ -x build/emulation/bench_kernels ] || { echo "build the emulation first: cmake -S . -B build && cmake --build build"; exit 1; }

echo "== kernels against their references (native/bench_kernels.cu on the host emulation)"
build/emulation/bench_kernels "${PEFT_EMULATION_SEED:-$RANDOM}"

echo "== Peft.Cuda.Tests on the host emulation"
results=$PWD/TestResults/emulation
rm -rf "$results"
set +e
# The stand-in driver accepts any module image (its kernels are compiled in): without an nvcc-built fatbin to embed,
# any file will do as the image.
image=()
[ -f build/kernels/peft_kernels.fatbin ] || image=(PEFT_KERNELS_FATBIN="$lib")
env PEFT_CUDA_DRIVER_PATH="$lib" PEFT_CUBLAS_PATH="$lib" "${image[@]}" \
  dotnet test tests/Peft.Cuda.Tests -p:VSTestResultsDirectory="$results"
status=$?
set -e
trx=$results/Peft.Cuda.Tests.trx
[ -f "$trx" ] || { echo "no results ($trx)"; exit 1; }
counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
get() { printf '%s' "$counters" | sed -E "s/.* $1=\"([0-9]+)\".*/\1/"; }
total=$(get total); executed=$(get executed); passed=$(get passed); failed=$(( $(get failed) + $(get error) ))
echo "host emulation of CUDA: ${passed} passed, ${failed} failed, $((total - executed)) skipped"
# Every GPU test but the few too large for the emulation must run: a suite that skipped wholesale loaded no device.
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$executed" -lt $((total / 2)) ]; then exit 1; fi
