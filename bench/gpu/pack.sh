#!/usr/bin/env bash
# Prepares what a GPU-machine call carries (the machine has no .NET): the kernels built here with nvcc, the GPU test
# runner and the benchmark program (framework-dependent builds), and a minimal .NET runtime (the dotnet host plus
# Microsoft.NETCore.App) to run both. Everything lands in .device-carry/ (git-ignored), well under the 64 MiB a call carries.
# Then call the device tool with carry [".device-carry"] and command "bash bench/gpu/run.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device-carry
rm -rf "$out" && mkdir -p "$out/app"
cmake -S . -B build -DPEFT_CUDA_HOST_COMPILER=clang-14 -DPEFT_REQUIRE_NVCC=ON > /dev/null
cmake --build build > /dev/null
dotnet publish tests/Peft.Cuda.Tests -c Release -p:GpuRunner=true --no-self-contained -o "$out/app/tests" > /dev/null
dotnet publish bench/Peft.Bench -c Release --no-self-contained -o "$out/app/bench" > /dev/null
# The footprint suite's trainer as one native-AOT file with Peft.Cuda (no runtime needed): start-up to the first step on the GPU.
dotnet publish bench/Footprint/Peft.Footprint -c Release -r linux-x64 -p:PublishAot=true -p:IlcInstructionSet=x86-64-v4 -p:WithCuda=true \
  -p:DebugType=none -p:GenerateDocumentationFile=false -o "$out/app/footprint" > /dev/null
rm -f "$out"/app/footprint/*.dbg
root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime=$(ls -d "$root"/shared/Microsoft.NETCore.App/* | sort -V | tail -n 1)
tar -C "$root" -cJf "$out/dotnet-runtime.tar.xz" dotnet host "shared/Microsoft.NETCore.App/$(basename "$runtime")"
tar -C "$out" -cJf "$out/apps.tar.xz" app && rm -rf "$out/app"
du -sh "$out"/*
