#!/usr/bin/env bash
# Packs issue 10's TorchSharp peers for a GPU-machine call (whose PyTorch libtorch they load; this VM's libstdc++ is
# too old for TorchSharp's own): the CPU side-by-side bench (bench/Peft.Bench.TorchSharp) and the footprint twin
# (bench/Footprint/Peft.Footprint.TorchSharp), framework-dependent, with libtorch's ~1 GB of natives dropped except
# TorchSharp's shim libLibTorchSharp.so, into .device-carry/ts.tar.xz. Run after bench/gpu/pack.sh (which makes the
# .NET runtime archive both use), then call the device tool with carry [".device-carry"] and "bash bench/gpu/torchsharp_cpu.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device-carry
stage=$(mktemp -d)
dotnet publish bench/Peft.Bench.TorchSharp -c Release -r linux-x64 --no-self-contained -o "$stage/app-ts" > /dev/null
dotnet publish bench/Footprint/Peft.Footprint.TorchSharp -c Release -r linux-x64 --no-self-contained -o "$stage/app-ts-footprint" > /dev/null
for dir in "$stage"/app-ts*; do
  find "$dir" -name '*.so*' ! -name 'libLibTorchSharp.so' -delete
  rm -rf "$dir/cpu"
done
mkdir -p "$out"
tar -C "$stage" -cJf "$out/ts.tar.xz" app-ts app-ts-footprint
rm -rf "$stage"
du -sh "$out/ts.tar.xz"
