#!/usr/bin/env bash
# Issue 10's CPU peer on the GPU machine's CPU (its glibc ≥ 2.38 lets libtorch load; the developer VM's 2.36 does not):
# the TorchSharp bench (published here without libtorch's 600 MB of natives by bench/gpu/pack-torchsharp.sh, as
# .device-carry/ts.tar.xz) runs on the
# machine's Python PyTorch libtorch through TorchSharp's native shim, alternating with Peft.Native on the same cores.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
mkdir -p /tmp/dotnet && tar -C /tmp/dotnet -xJf .device-carry/dotnet-runtime.tar.xz
tar -C .device-carry -xJf .device-carry/ts.tar.xz
export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
torchlib=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
python3 -c "import torch; print('python torch', torch.__version__, 'threads', torch.get_num_threads())"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Flags" | cut -c1-160
export LD_LIBRARY_PATH=$torchlib TORCHSHARP_NATIVE=$PWD/.device-carry/app-ts/libLibTorchSharp.so
timeout 500 dotnet .device-carry/app-ts/Peft.Bench.TorchSharp.dll ${ROUNDS:-5} 2>&1 | tee "$out/torchsharp-cpu.log" | grep -v "^Copy \|Consolidat\|Trying" | head -n 60
echo "== footprint twin: TorchSharp's trainer, process start to the first step (3 runs; Peft.Native's AOT build: run.sh)"
for run in 1 2 3; do
  echo "torchsharp: $(timeout 120 dotnet .device-carry/app-ts-footprint/Peft.Footprint.TorchSharp.dll 3 2>&1 | grep -E '^(first-step|done)' | tr '\n' ' ')"
done 2>&1 | tee "$out/footprint-torchsharp.log"
