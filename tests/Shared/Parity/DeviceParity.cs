using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.TestSupport;

/// <summary>
/// The same seeded LoRA model run on the CPU and on another device through the ordinary API (<c>model.To(device)</c>,
/// a forward with labels, <c>Backward()</c>, AdamW), for the device-parity tests: Peft.Cuda.Tests on a real GPU,
/// Peft.Tests on the host-memory stand-in that exercises the device paths without one.
/// </summary>
internal static class DeviceParity
{
    public static readonly string[] Architectures = ["gpt2", "llama", "bert", "t5"];

    /// <summary>A tiny model of <paramref name="arch"/> with a randomly initialised LoRA (dropout 0.1) on every linear layer.</summary>
    public static Peft.PeftModel Build(string arch)
    {
        var json = arch switch
        {
            "gpt2" => TinyConfigs.Gpt2,
            "llama" => TinyConfigs.Llama,
            "bert" => TinyConfigs.BertMaskedLm.Replace("BertForMaskedLM", "BertForSequenceClassification"),
            "t5" => TinyConfigs.T5,
            _ => throw new ArgumentException($"no tiny {arch}", nameof(arch)),
        };
        var model = TinyConfigs.Create(json, seed: 5);
        var taskType = arch switch { "bert" => "SEQ_CLS", "t5" => "SEQ_2_SEQ_LM", _ => "CAUSAL_LM" };
        return Peft.PeftModel.Create(model, new Peft.LoraConfig
        {
            R = 4, LoraAlpha = 8, LoraDropout = 0.1, TargetModules = ["all-linear"], TaskType = taskType, InitLoraWeights = "false",
        });
    }

    /// <summary>Quantized bases of <see cref="BuildQuantized"/>: LLM.int8 with its outlier decomposition (a threshold of
    /// 2.5 that this model's activations cross, so both halves run) and weight-only; NF4 plain and double-quantized.</summary>
    public static readonly string[] QuantizedBases = ["int8", "int8-weight-only", "nf4", "nf4-double-quant"];

    /// <summary>QLoRA on the tiny GPT-2: its Conv1D layers quantized as <paramref name="kind"/> says, a randomly
    /// initialised LoRA (dropout 0.1) on them.</summary>
    public static Peft.PeftModel BuildQuantized(string kind)
    {
        var model = TinyConfigs.Create(TinyConfigs.Gpt2, seed: 5);
        Quantize.Linears(model, new QuantizationConfig
        {
            Method = kind.StartsWith("int8", StringComparison.Ordinal) ? "int8" : "nf4",
            Int8Threshold = kind == "int8-weight-only" ? null : 2.5,
            DoubleQuant = kind == "nf4-double-quant",
        });
        return Peft.PeftModel.Create(model, new Peft.LoraConfig
        {
            R = 4, LoraAlpha = 8, LoraDropout = 0.1, TargetModules = ["c_attn", "c_proj", "c_fc"], TaskType = "CAUSAL_LM", InitLoraWeights = "false",
        });
    }

    /// <summary>Token ids [2, 6] and labels for <paramref name="arch"/> (class ids for the classifier, else the ids).</summary>
    public static (Tensor Ids, Tensor Labels) Batch(string arch)
    {
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6, 11, 13 }, [2, 6]);
        var labels = arch == "bert" ? Tensor.FromArray(new long[] { 2, 0 }) : ids.Clone();
        return (ids, labels);
    }

    /// <summary>One training forward/backward: the loss and every trainable gradient by name, on the host. The dropout
    /// stream is reseeded first, so two devices draw the same masks.</summary>
    public static (double Loss, Dictionary<string, double[]> Grads) Step(Peft.PeftModel model, Tensor ids, Tensor labels, long[]? taskIds = null)
    {
        model.Train();
        model.ZeroGrad();
        Generator.Default.ManualSeed(99);
        using var scope = Tensor.NewScope();
        var output = model.Forward(ids, labels: labels, taskIds: taskIds);
        output.Loss!.Backward();
        // Parameters the step did not reach (an adapter skipped by module dropout) have no gradient and no entry.
        var grads = model.NamedParameters().Where(p => p.Parameter.RequiresGrad && p.Parameter.Grad != null).ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToDoubleArray());
        return (output.Loss.Item(), grads);
    }

    /// <summary><see cref="Step"/> on the CPU model with <paramref name="arch"/>'s batch and on the other model with the
    /// same batch moved to <paramref name="device"/>.</summary>
    public static ((double Loss, Dictionary<string, double[]> Grads) Cpu, (double Loss, Dictionary<string, double[]> Grads) Device) StepBoth(
        Peft.PeftModel cpu, Peft.PeftModel onDevice, Device device, string arch)
    {
        var (ids, labels) = Batch(arch);
        using var _i = ids;
        using var _l = labels;
        using var idsD = ids.To(device);
        using var labelsD = labels.To(device);
        return (Step(cpu, ids, labels), Step(onDevice, idsD, labelsD));
    }

    /// <summary>‖a − b‖ / max(‖b‖, 10⁻³·√n): relative, except for a gradient that is zero in exact arithmetic (a
    /// key bias under softmax: adding q·b to every score of a row changes nothing), where both devices hold rounding
    /// noise of their own summation order and the error is measured against that floor.</summary>
    public static double GradientError(double[] a, double[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            num += (a[i] - b[i]) * (a[i] - b[i]);
            den += b[i] * b[i];
        }
        return Math.Sqrt(num) / Math.Max(Math.Sqrt(den), 1e-3 * Math.Sqrt(a.Length));
    }

    /// <summary>‖a − b‖ / ‖b‖.</summary>
    public static double RelativeError(double[] a, double[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            num += (a[i] - b[i]) * (a[i] - b[i]);
            den += b[i] * b[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    /// <summary>Losses of <paramref name="steps"/> AdamW steps (lr 1e-2) on each model, the second on <paramref name="device"/>.</summary>
    public static List<(double Cpu, double Device)> TrainSide(Peft.PeftModel cpu, Peft.PeftModel onDevice, Device device, string arch, int steps)
    {
        var (ids, labels) = Batch(arch);
        using var _i = ids;
        using var _l = labels;
        using var idsD = ids.To(device);
        using var labelsD = labels.To(device);
        var optCpu = new AdamW(cpu.Parameters().Where(p => p.RequiresGrad), lr: 1e-2);
        var optDev = new AdamW(onDevice.Parameters().Where(p => p.RequiresGrad), lr: 1e-2);
        var losses = new List<(double, double)>();
        for (int s = 0; s < steps; s++)
        {
            var (lc, _) = Step(cpu, ids, labels);
            var (ld, _) = Step(onDevice, idsD, labelsD);
            optCpu.Step();
            optDev.Step();
            losses.Add((lc, ld));
        }
        return losses;
    }
}
