#!/usr/bin/env bash
# One GPU-machine call (after bench/gpu/pack.sh here; carry [".device-carry"]): unpacks the carried .NET runtime and
# programs, runs every GPU test, then the CUDA benchmark suite and the PyTorch + HF peft peers in the same call, so
# the figures in BENCHMARKS.md sit side by side from one machine, then compute-sanitizer and ncu. Logs land in $OUT.
# TESTS_ONLY=1 stops after the GPU tests; TRAIN_STEPS / TRAIN_BATCH size the side-by-side training run.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
mkdir -p /tmp/dotnet && tar -C /tmp/dotnet -xJf .device-carry/dotnet-runtime.tar.xz
tar -C .device-carry -xJf .device-carry/apps.tar.xz
export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/device.txt"

echo "== GPU tests"
dotnet .device-carry/app/tests/Peft.Cuda.Tests.dll --output detailed --no-progress > "$out/gpu-tests.log" 2>&1
echo "GPU tests exit code $?"
grep -E "^(failed|passed|skipped) " "$out/gpu-tests.log" | sort | uniq -c | awk '{print $2}' | sort | uniq -c
grep -A12 "^failed " "$out/gpu-tests.log" | head -n 80
sed -n '/Test run summary/,$p' "$out/gpu-tests.log"

if [ "${TESTS_ONLY:-0}" = 1 ]; then exit 0; fi  # TESTS_ONLY=1: the GPU tests alone

echo "== footprint: the native-AOT trainer (bench/Footprint), process start to the first step, on the GPU and its CPU"
for run in 1 2 3; do
  echo "cuda: $(.device-carry/app/footprint/Peft.Footprint 3 --device cuda 2>&1 | tr '\n' ' ')"
  echo "cpu:  $(.device-carry/app/footprint/Peft.Footprint 3 2>&1 | tr '\n' ' ')"
done 2>&1 | tee "$out/footprint.log"

echo "== CPU GEMM on all of this machine's cores: tile grid (2 and 1 tiles per thread) vs rows only, region cost (issue 10)"
PEFT_BENCH_GRID_AB=1 PEFT_BENCH_SHAPES=256x768x768,256x2304x768,256x3072x768,256x768x3072,512x512x512,1024x1024x1024,2048x2048x2048,256x50257x768 \
  timeout 240 dotnet .device-carry/app/bench/Peft.Bench.dll gemm-threads 2>&1 | tee "$out/cpu-gemm-partitions.log"

echo "== native/bench_kernels (nvcc alone, no .NET)"
cmake -S . -B /tmp/native -DPEFT_BUILD_KERNEL_BENCH=ON > /dev/null && cmake --build /tmp/native 2>&1 | grep -E "error|warning" | head -n 20
/tmp/native/kernels/bench_kernels 2>&1 | tee "$out/bench-native.log"

echo "== benchmarks: Peft.Native kernels"
dotnet .device-carry/app/bench/Peft.Bench.dll kernels 2>&1 | tee "$out/bench-kernels.log"
echo "== benchmarks: PyTorch + HF peft peers"
python3 bench/gpu/hf_peers.py --json "$out/hf_peers.json" 2>&1 | tee "$out/hf_peers.log"

echo "== GPT-2 124M LoRA training: HF peft (the peer writes the shared model, adapter and ids), then Peft.Native"
train=/tmp/peft-train; rm -rf "$train"
timeout 240 python3 bench/gpu/hf_train_peer.py --dir "$train" --steps "${TRAIN_STEPS:-12}" --batch "${TRAIN_BATCH:-8}" 2>&1 | tee "$out/train-hf.log"
cp "$train/hf.json" "$out/train-hf.json" 2>/dev/null
PEFT_TRAIN_DIR="$train" PEFT_TRAIN_JSON="$out/train-peft.json" timeout 300 dotnet .device-carry/app/bench/Peft.Bench.dll gpu-train 2>&1 | tee "$out/train-peft.log"

echo "== compute-sanitizer memcheck over the kernel, LoRA and tensor-op tests"
timeout 240 compute-sanitizer --tool memcheck --print-limit 20 dotnet .device-carry/app/tests/Peft.Cuda.Tests.dll --filter "FullyQualifiedName~KernelTests|FullyQualifiedName~Lora|FullyQualifiedName~TensorOpsTests" --no-progress > "$out/memcheck.log" 2>&1
echo "compute-sanitizer exit code $?"
grep -E "ERROR SUMMARY|Test run summary|total:|failed:|succeeded:" "$out/memcheck.log" | head

echo "== ncu: kernels/lora.cu (two launches of each, after warm-up)"
for pattern in "lora_shrink_rk|lora_expand_cr" "lora_shrink_kr|lora_expand_rc"; do
  timeout 150 ncu --kernel-name "regex:$pattern" --launch-skip 20 --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats \
    dotnet .device-carry/app/bench/Peft.Bench.dll kernels-lora >> "$out/ncu-lora.log" 2>&1
  echo "ncu exit code $?"
done
grep -E "  lora_|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy" "$out/ncu-lora.log" | head -n 60
