#!/usr/bin/env bash
# Issue 10's CPU suite in one command on this machine: Peft.Native against TorchSharp (libtorch CPU), alternating in
# one process (bench/Peft.Bench.TorchSharp). Usage: bash bench/cpu/torchsharp.sh [rounds]   (default 5)
#
# TorchSharp-cpu 0.107's libtorch 2.10 needs glibc ≥ 2.38 (GLIBC_2.38 symbols in libtorch_cpu.so); Debian 12 has 2.36.
# Where the host's glibc is older, Debian 13's libc6 / libstdc++6 / libgcc-s1 / libgomp1 / zlib1g are unpacked into
# .bench-cache/glibc (git-ignored) and a copy of the bench's apphost gets that loader as its ELF interpreter
# (patchelf), with LD_LIBRARY_PATH set for that process tree only. Both libraries then run on the same loader and
# libc, so neither side is favoured; nothing is installed into the system's library paths.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
dotnet build -c Release bench/Peft.Bench.TorchSharp -v q -nologo > /tmp/peft-ts-build.log 2>&1 || { tail -20 /tmp/peft-ts-build.log; exit 1; }
app=bench/Peft.Bench.TorchSharp/bin/Release/net10.0
glibc=$(ldd --version 2>&1 | sed -n 1p | grep -oE '[0-9]+\.[0-9]+$')
run=("./$app/Peft.Bench.TorchSharp")
if [ "$(printf '%s\n2.38\n' "$glibc" | sort -V | sed -n 1p)" != "2.38" ]; then
  root=$PWD/.bench-cache/glibc
  if [ ! -e "$root/usr/lib64/ld-linux-x86-64.so.2" ]; then
    echo "host glibc $glibc < 2.38: unpacking Debian 13's runtime libraries into $root"
    command -v patchelf > /dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends patchelf > /dev/null; }
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb http://deb.debian.org/debian trixie main" > "$apt_dir/sources.list"
    apt_opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" -o Dir::State::Status=/dev/null)
    apt-get "${apt_opts[@]}" update -qq
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download libc6 libstdc++6 libgcc-s1 libgomp1 zlib1g 2> /dev/null)
    mkdir -p "$root.partial"
    for deb in "$apt_dir"/*.deb; do dpkg-deb -x "$deb" "$root.partial"; done
    rm -rf "$root" && mv "$root.partial" "$root" && rm -rf "$apt_dir"
  fi
  command -v patchelf > /dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends patchelf > /dev/null; }
  cp "$app/Peft.Bench.TorchSharp" "$app/Peft.Bench.TorchSharp.glibc"
  patchelf --set-interpreter "$root/usr/lib64/ld-linux-x86-64.so.2" "$app/Peft.Bench.TorchSharp.glibc"
  export DOTNET_ROOT=${DOTNET_ROOT:-$(dirname "$(readlink -f "$(command -v dotnet)")")}
  run=(env LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu" "./$app/Peft.Bench.TorchSharp.glibc")
  echo "running on Debian 13's glibc $(basename "$(ls "$root"/usr/lib/x86_64-linux-gnu/libc.so.6)") loader (host: $glibc)"
fi
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
"${run[@]}" "$rounds" 2>&1 | grep -v "^Copy \|Consolidat\|Trying"
