#!/usr/bin/env python3
"""The GPU training peer: GPT-2 124M (random init) + HF peft LoRA, bf16 autocast, trained with AdamW in eager PyTorch.

Run on the lent GPU machine:   python3 bench/gpu/hf_train_peer.py --dir /tmp/train [--steps 20 --batch 8 --seq 1024]
Writes into --dir what `Peft.Bench gpu-train` (PEFT_TRAIN_DIR=--dir) then trains on, so both start from the same
weights, the same adapter and the same token ids:
  model/               config.json + model.safetensors, the random-init GPT2LMHeadModel (seed 0, dropout off)
  adapter/             the LoRA as get_peft_model created it (r = 16, alpha 32, c_attn / c_proj / c_fc, B = 0)
  batches.safetensors  input_ids [steps, batch, seq] (int64, seed 1); labels are the ids (causal LM)
  hf.json              tokens/s (steps after two warm-up steps), peak allocated bytes, the loss of every step
Every step ends with loss.item() (a sync), as a training loop that logs does; the C# side does the same.
"""
import argparse
import json
import os
import time

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(os.path.join(args.dir, "model"), safe_serialization=True)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(os.path.join(args.dir, "adapter"))
    ids = torch.randint(0, config.vocab_size, (args.steps, args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    save_file({"input_ids": ids.contiguous()}, os.path.join(args.dir, "batches.safetensors"))

    peft_model.cuda().train()
    trainable = [q for q in peft_model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)
    torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for step in range(args.steps):
        x = ids[step].cuda(non_blocking=False)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = peft_model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    timed = times[2:] if len(times) > 2 else times
    tokens_per_s = args.batch * args.seq * len(timed) / sum(timed)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, peft=__import__("peft").__version__,
                  attention=getattr(model.config, "_attn_implementation", "eager"), batch=args.batch, seq=args.seq,
                  steps=args.steps, tokens_per_s=tokens_per_s, step_ms=1e3 * sum(timed) / len(timed),
                  peak_bytes=torch.cuda.max_memory_allocated(), trainable=sum(q.numel() for q in trainable), losses=losses)
    with open(os.path.join(args.dir, "hf.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"HF peft {result['peft']} (torch {result['torch']}, attention {result['attention']}) on {result['device']}: "
          f"GPT-2 124M LoRA r=16, B={args.batch}, T={args.seq}, bf16 autocast: {tokens_per_s:,.0f} tokens/s, "
          f"{result['step_ms']:.1f} ms/step, peak {result['peak_bytes'] / 2**30:.2f} GiB; loss {losses[0]:.4f} → {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
