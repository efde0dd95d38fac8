#!/usr/bin/env bash
# Issue 10's footprint suite, one command: bash bench/Footprint/footprint.sh [runs=5]
# Publishes the same small LoRA trainer (bench/Footprint/Peft.Footprint: GPT-2-shaped 6 × 512, LoRA r = 8 on c_attn,
# AdamW, 3 steps of 8 × 128 tokens) the ways an app ships it, and its TorchSharp twin, then measures
#   - what ships: bytes and files of the publish folder (no symbols, no XML docs), and its tar.xz;
#   - time from process start to the end of the first training step (the app reads its own start from /proc), and the
#     whole run's wall time and peak RSS, over `runs` runs with the variants alternating; medians.
# Variants: self-contained trimmed (JIT), the same with Peft.Cuda (bindings + the kernel fatbin when build/kernels has
# one), native AOT (CPU), native AOT with Peft.Cuda, and TorchSharp-cpu self-contained. Without CUDA devices the
# CUDA builds run on the CPU: they show what CUDA support adds to the download and to start-up, not GPU speed.
# Output: a markdown table on stdout; publish folders under artifacts/footprint/.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
out=artifacts/footprint
rm -rf "$out"; mkdir -p "$out"
common=(-c Release -r linux-x64 --self-contained -p:DebugType=none -p:DebugSymbols=false -p:GenerateDocumentationFile=false
        -p:CopyOutputSymbolsToPublishDirectory=false)
app=bench/Footprint/Peft.Footprint
# AOT code is compiled for one instruction-set level ahead of time; x86-64-v4 is AVX-512 (what the JIT picks on this
# machine), so both builds run the same GEMM micro-kernel. PEFT_AOT_ISA=x86-64-v3 gives a build for AVX2 machines.
isa=${PEFT_AOT_ISA:-x86-64-v4}

publish() { # name, project, extra args…
  local name=$1 project=$2; shift 2
  echo "publishing $name" >&2
  if ! dotnet publish "$project" "${common[@]}" "$@" -o "$out/$name" > "$out/$name.publish.log" 2>&1; then
    echo "  $name: publish failed (tail of $out/$name.publish.log):" >&2; tail -n 5 "$out/$name.publish.log" >&2
    rm -rf "$out/$name"; return 0
  fi
  find "$out/$name" \( -name '*.dbg' -o -name '*.pdb' -o -name '*.xml' \) -delete
}
publish peft-trimmed "$app" -p:PublishTrimmed=true -p:WithCuda=false
publish peft-trimmed-cuda "$app" -p:PublishTrimmed=true -p:WithCuda=true
publish peft-aot "$app" -p:PublishAot=true -p:IlcInstructionSet="$isa" -p:WithCuda=false
publish peft-aot-cuda "$app" -p:PublishAot=true -p:IlcInstructionSet="$isa" -p:WithCuda=true
publish torchsharp bench/Footprint/Peft.Footprint.TorchSharp

variants=()
for v in peft-trimmed peft-trimmed-cuda peft-aot peft-aot-cuda torchsharp; do [ -d "$out/$v" ] && variants+=("$v"); done
exe() { case $1 in torchsharp) echo "$out/$1/Peft.Footprint.TorchSharp" ;; *) echo "$out/$1/Peft.Footprint" ;; esac; }

# One run: "first_ms wall_ms rss_mb loss", or "fail <first line of the error>".
run_once() {
  local start end log; log=$(mktemp)
  start=$(date +%s%N)
  if "$(exe "$1")" 3 > "$log" 2>&1; then
    end=$(date +%s%N)
    awk -v wall=$(( (end - start) / 1000000 )) '/^first-step/{f=$2} /^done/{l=$3; r=$5} END{print f, wall, r, l}' "$log"
  else
    echo "fail $(grep -m1 -iE 'error|exception|unable|cannot' "$log" | cut -c1-160)"
  fi
  rm -f "$log"
}

declare -A results failure
for ((i = 0; i < runs; i++)); do
  for v in "${variants[@]}"; do
    r=$(run_once "$v")
    if [[ $r == fail* ]]; then failure[$v]=${r#fail }; else results[$v]+="$r"$'\n'; fi
  done
done

median() { sort -n | awk '{a[NR]=$1} END{if (NR) print a[int((NR+1)/2)]}'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b / 1048576}'; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; $(dotnet --version) SDK; $runs runs, medians; $(date -u +%F)"
echo
echo "| app | ships (MB, files) | tar.xz MB | start → first step done, ms | whole run (3 steps), ms | peak RSS MB | final loss |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for v in "${variants[@]}"; do
  bytes=$(du -sb "$out/$v" | cut -f1); files=$(find "$out/$v" -type f | wc -l)
  xz=$(tar -C "$out" -cf - "$v" | xz -T0 -6 | wc -c)
  if [ -n "${failure[$v]:-}" ]; then
    echo "| $v | $(mb "$bytes"), $files | $(mb "$xz") | cannot start here: ${failure[$v]} | | | |"
    continue
  fi
  rows=${results[$v]}
  first=$(awk '{print $1}' <<<"$rows" | median); wall=$(awk '{print $2}' <<<"$rows" | median)
  rss=$(awk '{print $3}' <<<"$rows" | median); loss=$(awk 'NF{print $4}' <<<"$rows" | head -1)
  echo "| $v | $(mb "$bytes"), $files | $(mb "$xz") | $first | $wall | $rss | $loss |"
done
