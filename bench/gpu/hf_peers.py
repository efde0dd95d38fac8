#!/usr/bin/env python3
"""Peer timings on the GPU machine: the measured ceilings and eager HF peft's LoRA layer at issue 8's target shape.

Run where torch + peft + a CUDA GPU exist (the lent machine):   python3 bench/gpu/hf_peers.py [--json out.json]
Prints one table; the same figures go to --json for BENCHMARKS.md. Every timing is the median of CUDA-event-timed
repetitions after warm-up, on random (never zero) data.

Measured:
  * copy ceiling: device-to-device copy of 1 GiB, bytes read + written per second;
  * GEMM ceiling: bf16 8192^3 torch.matmul, TFLOP/s;
  * at M = K = N = 4096, r = 16, bf16: the bare base GEMM X·Wᵀ, the dX GEMM dY·W, and peft's lora.Linear
    (dropout 0, scaling 2) forward and backward (dX, dA, dB; the base weight frozen), as ratios to the bare GEMMs —
    the figures issue 8 asks our fused LoRA kernels to beat (target ≤ 1.10× forward, ≤ 1.15× backward).
"""
import argparse
import json
import statistics

import torch


def cuda_time_ms(fn, warmup=10, reps=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def ceilings():
    n = 1 << 29  # 1 GiB of bf16
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src))
    copy_tbs = 2 * src.numel() * 2 / (ms * 1e-3) / 1e12
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = cuda_time_ms(lambda: a @ b, reps=20)
    gemm_tflops = 2 * 8192 ** 3 / (ms * 1e-3) / 1e12
    return copy_tbs, gemm_tflops


def lora_layer(m=4096, k=4096, n=4096, r=16):
    import peft

    class OneLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(k, n, bias=False)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    config = peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["proj"], init_lora_weights=False)
    model = peft.get_peft_model(OneLinear(), config).to(device="cuda", dtype=torch.bfloat16)
    layer = model.base_model.model.proj  # peft's lora.Linear around the frozen nn.Linear
    base = layer.base_layer
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    w = base.weight

    base_fwd = cuda_time_ms(lambda: x.detach() @ w.t())
    dx_gemm = cuda_time_ms(lambda: dy @ w)
    with torch.no_grad():
        lora_fwd = cuda_time_ms(lambda: layer(x))

    def fwd_bwd():
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(dy)

    def fwd_only_graph():
        layer(x)

    lora_fwd_graph = cuda_time_ms(fwd_only_graph)  # forward that records the graph (what training pays)
    lora_step = cuda_time_ms(fwd_bwd)
    lora_bwd = lora_step - lora_fwd_graph
    return dict(peft=peft.__version__, torch=torch.__version__, m=m, k=k, n=n, r=r,
                base_fwd_ms=base_fwd, dx_gemm_ms=dx_gemm, lora_fwd_ms=lora_fwd, lora_fwd_graph_ms=lora_fwd_graph,
                lora_fwd_bwd_ms=lora_step, lora_bwd_ms=lora_bwd,
                fwd_ratio=lora_fwd / base_fwd, bwd_ratio=lora_bwd / dx_gemm,
                base_tflops=2 * m * n * k / (base_fwd * 1e-3) / 1e12)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    args = p.parse_args()
    copy_tbs, gemm_tflops = ceilings()
    lora = lora_layer()
    result = dict(device=torch.cuda.get_device_name(), copy_tbs=copy_tbs, gemm_bf16_tflops=gemm_tflops, lora=lora)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(f"device: {result['device']}  torch {lora['torch']}  peft {lora['peft']}")
    print(f"copy ceiling: {copy_tbs:.2f} TB/s (read + write)   bf16 GEMM 8192^3: {gemm_tflops:.0f} TFLOP/s")
    print(f"M=K=N={lora['m']}, r={lora['r']}, bf16")
    print(f"  base GEMM X·Wᵀ        {lora['base_fwd_ms']:.3f} ms ({lora['base_tflops']:.0f} TFLOP/s)")
    print(f"  dX GEMM dY·W          {lora['dx_gemm_ms']:.3f} ms")
    print(f"  peft LoRA forward     {lora['lora_fwd_ms']:.3f} ms  = {lora['fwd_ratio']:.2f}x base GEMM")
    print(f"  peft LoRA backward    {lora['lora_bwd_ms']:.3f} ms  = {lora['bwd_ratio']:.2f}x dX GEMM "
          f"(fwd+bwd {lora['lora_fwd_bwd_ms']:.3f} ms minus graph-recording fwd {lora['lora_fwd_graph_ms']:.3f} ms)")


if __name__ == "__main__":
    main()
