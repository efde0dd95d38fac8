using System.CommandLine;
using System.Globalization;
using Peft.Cli.Demo;
using Peft.Core;
using Peft.Cli.Training;

namespace Peft.Cli.Commands;

/// <summary>
/// <c>peft train</c>: the main job. Without <c>--model</c> it runs the built-in demonstration (a model and data set that
/// ship with the program); with <c>--model</c> and <c>--data</c> it fine-tunes that Hugging Face folder with any of the
/// layer-injecting PEFT methods and saves the adapter, its loss curve and its metrics.
/// </summary>
internal static class TrainCommand
{
    /// <summary>Exit code meaning "this form of the verb is not available in this build yet".</summary>
    public const int NotYet = 3;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (default: the built-in demo model)" };
        var data = new Option<string>("--data") { Description = "training data: .jsonl (one JSON object per line) or .csv with a header" };
        var evalData = new Option<string>("--eval-data") { Description = "evaluation data (default: a held-out part of --data)" };
        var method = new Option<string>("--method") { Description = "lora, loha, lokr, adalora, ia3, vera, oft, boft, prompt, ptuning, prefix, llama-adapter", DefaultValueFactory = _ => "lora" };
        var virtualTokens = new Option<int>("--virtual-tokens") { Description = "num_virtual_tokens of prompt, ptuning and prefix; adapter_len of llama-adapter", DefaultValueFactory = _ => 20 };
        var task = new Option<string>("--task") { Description = "causal-lm, seq-cls, token-cls, seq2seq (default: from config.json's architectures)" };
        var r = new Option<int>("--r") { Description = "rank (LoRA, LoHa, LoKr, VeRA; AdaLoRA's target rank)", DefaultValueFactory = _ => 8 };
        var alpha = new Option<double>("--alpha") { Description = "scaling numerator (lora_alpha / alpha)", DefaultValueFactory = _ => 16 };
        var targets = new Option<string>("--target-modules") { Description = "comma-separated module names (default: PEFT's per-architecture default)" };
        var output = new Option<string>("--output") { Description = "output folder (adapter, loss.png); the demo's default is peft-demo", };
        var epochs = new Option<int>("--epochs") { Description = "training epochs", DefaultValueFactory = _ => 3 };
        var lr = new Option<double>("--lr") { Description = "AdamW learning rate", DefaultValueFactory = _ => 2e-4 };
        var batchSize = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var maxLength = new Option<int>("--max-length") { Description = "tokens per example (longer ones are truncated)", DefaultValueFactory = _ => 256 };
        var quantize = new Option<string>("--quantize") { Description = "none, int8 or nf4 (frozen base weights; LoRA trains on top)", DefaultValueFactory = _ => "none" };
        var doubleQuant = new Option<bool>("--double-quant") { Description = "with --quantize nf4: quantize the block absmax values too (bnb_4bit_use_double_quant)" };
        var int8Threshold = new Option<double>("--int8-threshold") { Description = "with --quantize int8: activation outlier threshold (llm_int8_threshold; 0: all columns in int8)", DefaultValueFactory = _ => 6.0 };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "recompute each layer in backward instead of keeping its activations (less memory, ~1 more forward of compute)" };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N (the model, batches and optimizer on that GPU)", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string>("--dtype") { Description = "f32, or bf16 / f16 mixed precision (frozen weights stored and matmuls computed in it, adapters f32; f16 with loss scaling)", DefaultValueFactory = _ => "f32" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 42 };
        var schedule = new Option<string>("--schedule") { Description = "constant, constant_with_warmup, linear, cosine (transformers' schedules)", DefaultValueFactory = _ => "linear" };
        var warmup = new Option<int>("--warmup-steps") { DefaultValueFactory = _ => 0 };
        var gradAccum = new Option<int>("--grad-accum") { Description = "micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
        var maxGradNorm = new Option<double>("--max-grad-norm") { Description = "global gradient-norm clip (0: none)", DefaultValueFactory = _ => 1.0 };
        var evalFraction = new Option<double>("--eval-fraction") { Description = "share of --data held out when --eval-data is absent", DefaultValueFactory = _ => 0.1 };
        var cmd = new Command("train", "Fine-tune a Hugging Face model folder with a PEFT method (without --model: a complete built-in demonstration)");
        foreach (var opt in new Option[] { model, data, evalData, method, virtualTokens, task, r, alpha, targets, output, epochs, lr, batchSize, maxLength, quantize, doubleQuant, int8Threshold, checkpointing, device, dtype, seed, evalFraction, schedule, warmup, gradAccum, maxGradNorm })
            cmd.Options.Add(opt);
        cmd.SetAction(result => ModelLoading.ReportingBadInput(stderr, () =>
        {
            int n = result.GetValue(epochs);
            if (n <= 0) throw new ArgumentException("--epochs must be positive");
            if (result.GetValue(model) is not { } folder)
            {
                int demoEpochs = result.GetResult(epochs) is { Implicit: false } ? n : 30;
                return ComplaintDemo.Run(result.GetValue(output) ?? "peft-demo", demoEpochs, stdout);
            }
            var target = ParseDevice(result.GetValue(device)!);
            if (target.Type == DeviceType.Cuda)
            {
                if (!Peft.Cuda.CudaDevice.IsAvailable(out var why) || target.Index >= Peft.Cuda.CudaDevice.Count)
                {
                    stderr.WriteLine($"--device {result.GetValue(device)}: no such CUDA device here ({why ?? $"{Peft.Cuda.CudaDevice.Count} device(s)"}); train on --device cpu");
                    return NotYet;
                }
            }
            var options = new TrainOptions(
                folder,
                result.GetValue(data) ?? throw new ArgumentException("--data is required with --model (a .jsonl or .csv file)"),
                result.GetValue(evalData),
                result.GetValue(method)!.ToLowerInvariant(),
                result.GetValue(task),
                Positive(result.GetValue(r), "--r"),
                result.GetValue(alpha),
                result.GetValue(targets)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                n,
                result.GetValue(lr) is > 0 and var rate ? rate : throw new ArgumentException("--lr must be positive"),
                Positive(result.GetValue(batchSize), "--batch-size"),
                Positive(result.GetValue(maxLength), "--max-length"),
                result.GetValue(quantize) is "none" or "int8" or "nf4" ? result.GetValue(quantize)! : throw new ArgumentException("--quantize must be none, int8 or nf4"),
                result.GetValue(output) ?? "peft-output",
                result.GetValue(seed),
                result.GetValue(evalFraction) is > 0 and < 1 and var f ? f : throw new ArgumentException("--eval-fraction must lie in (0, 1)"),
                Positive(result.GetValue(virtualTokens), "--virtual-tokens"),
                result.GetValue(schedule)!,
                result.GetValue(warmup) >= 0 ? result.GetValue(warmup) : throw new ArgumentException("--warmup-steps must not be negative"),
                Positive(result.GetValue(gradAccum), "--grad-accum"),
                result.GetValue(maxGradNorm) is > 0 and var clip ? clip : null,
                result.GetValue(doubleQuant),
                result.GetValue(int8Threshold) is >= 0 and var threshold ? threshold : throw new ArgumentException("--int8-threshold must not be negative"),
                result.GetValue(dtype) is "f32" or "bf16" or "f16" ? result.GetValue(dtype)! : throw new ArgumentException($"--dtype must be f32, bf16 or f16, got '{result.GetValue(dtype)}'"),
                result.GetValue(checkpointing),
                target);
            IProgressView view = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected ? new SpectreProgress() : new PlainProgress(stdout);
            return TrainRunner.Run(options, view, stdout);
        }));
        return cmd;
    }

    private static int Positive(int value, string name) => value > 0 ? value : throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{name} must be positive, got {value}"));

    /// <summary>cpu, cuda (device 0) or cuda:N.</summary>
    internal static Device ParseDevice(string text) => text.ToLowerInvariant() switch
    {
        "cpu" => Device.Cpu,
        "cuda" => Device.Cuda(0),
        var t when t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t.AsSpan(5), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) => Device.Cuda(i),
        _ => throw new ArgumentException($"--device must be cpu, cuda or cuda:N, got '{text}'"),
    };
}
