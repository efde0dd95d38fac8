using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

/// <summary>LoRA on int8 / NF4 frozen bases (QLoRA-style training on the CPU).</summary>
[TestFixture]
public class QuantizedLoraTests
{
    private static readonly long[] IdValues = [3, 9, 4, 12, 7, 1, 5, 2];

    private static float[] Logits(Func<Tensor, Tensor> forward)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        using var ids = Tensor.FromArray(IdValues, [1, 8]);
        return forward(ids).ToFloatArray();
    }

    private static double RelErr(float[] a, float[] b)
    {
        double n = 0, d = 0;
        for (int i = 0; i < a.Length; i++) { n += Math.Pow(a[i] - b[i], 2); d += (double)b[i] * b[i]; }
        return Math.Sqrt(n / d);
    }

    [TestCase("int8", 0.02)]
    [TestCase("nf4", 0.25)]
    public void AQuantizedModelStaysCloseToTheFloatModelAndIsSmaller(string method, double tolerance)
    {
        using var full = Cases.Create(Cases.Llama);
        full.Eval();
        var reference = Logits(x => full.Forward(x).Logits);
        long floatBytes = full.StateDict().Where(kv => kv.Key.EndsWith("proj.weight")).Sum(kv => kv.Value.NumEl * 4);
        using var quantized = Cases.Create(Cases.Llama);
        quantized.Eval();
        var replaced = Quantize.Linears(quantized, method);
        Assert.That(replaced, Has.Count.EqualTo(14), "7 projections × 2 layers; lm_head stays float");
        Assert.That(RelErr(Logits(x => quantized.Forward(x).Logits), reference), Is.LessThan(tolerance));
        long quantBytes = quantized.NamedBuffers().Where(b => b.Name.Contains("proj.")).Sum(b => b.Buffer.NumEl * b.Buffer.DType.SizeOf());
        Assert.That(quantBytes, Is.LessThan(floatBytes / (method == "int8" ? 3 : 5)), $"{quantBytes} vs {floatBytes} bytes");
    }

    [TestCase("int8")]
    [TestCase("nf4")]
    public void LoraTrainsOnAQuantizedBaseAndTheAdapterKeepsPeftsKeys(string method)
    {
        var dir = Directory.CreateTempSubdirectory("peft-qlora-").FullName;
        try
        {
            var model = Cases.Create(Cases.Llama);
            Quantize.Linears(model, method);
            model.Eval();
            var baseOut = Logits(x => model.Forward(x).Logits);
            using var peft = PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj", "down_proj"], TaskType = "CAUSAL_LM" });
            Assert.That(Logits(x => peft.Forward(x).Logits), Is.EqualTo(baseOut), "B = 0: the quantized base output at init");
            using var opt = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 1e-2);
            using var ids = Tensor.FromArray(IdValues, [1, 8]);
            double first = 0, last = 0;
            for (int step = 0; step < 15; step++)
            {
                using var scope = Tensor.NewScope();
                opt.ZeroGrad();
                var loss = peft.Forward(ids, labels: ids).Loss!;
                loss.Backward();
                if (step == 0)
                    foreach (var (name, p) in peft.NamedParameters())
                        Assert.That(p.Grad != null, Is.EqualTo(name.Contains(".lora_")), name);
                opt.Step();
                if (step == 0) first = loss.Item();
                last = loss.Item();
            }
            Assert.That(last, Is.LessThan(first));
            peft.SavePretrained(dir);
            using var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.That(st.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
            Assert.That(st.Tensors, Has.Count.EqualTo(12));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCase("int8", 0.02)]
    [TestCase("nf4", 0.25)]
    public void MergingIntoAQuantizedBaseDequantizesAddsAndRequantizes(string method, double tolerance)
    {
        using var scope = Tensor.NewScope();
        var model = Cases.Create(Cases.Llama);
        Quantize.Linears(model, method);
        model.Eval();
        var baseOut = Logits(x => model.Forward(x).Logits);
        using var peft = PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false", TaskType = "CAUSAL_LM" });
        peft.Eval();
        var unmerged = Logits(x => peft.Forward(x).Logits);
        Assert.That(RelErr(unmerged, baseOut), Is.GreaterThan(1e-3), "a non-trivial adapter");
        var q = (QuantizedLinear)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj.base_layer");
        var before = q.DequantizedWeight().ToFloatArray();
        peft.MergeAdapter();
        // The merged weight is requantized: equal to W + ΔW up to one more rounding, as PEFT's bnb merge.
        Assert.That(RelErr(Logits(x => peft.Forward(x).Logits), unmerged), Is.LessThan(tolerance));
        Assert.That(q.DequantizedWeight().ToFloatArray(), Is.Not.EqualTo(before), "the quantized storage changed");
        peft.UnmergeAdapter();
        Assert.That(RelErr(Logits(x => peft.Forward(x).Logits), unmerged), Is.LessThan(tolerance), "unmerged again: back to the adapter on the base");
        using (peft.DisableAdapter()) Assert.That(RelErr(Logits(x => peft.Forward(x).Logits), baseOut), Is.LessThan(tolerance));
        peft.MergeAdapter();
        var merged = Logits(x => peft.Forward(x).Logits);
        using var plain = peft.MergeAndUnload();
        Assert.That(plain.NamedModules().Count(m => m.Module is QuantizedLinear), Is.EqualTo(14), "still a quantized model");
        Assert.That(Logits(x => plain.Forward(x).Logits), Is.EqualTo(merged));
    }
}
