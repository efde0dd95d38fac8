using Peft.Nn;

namespace Peft.Tests;

/// <summary>LoRA over a base whose frozen weights are stored in BF16, trained with BF16 autocast: PEFT's usual
/// "bf16 model, f32 adapters" setup on the CPU.</summary>
[TestFixture]
public class MixedPrecisionLoraTests
{
    private static readonly long[] IdValues = [3, 9, 4, 12, 7, 1, 5, 2];

    private static float[] Logits(PeftModel peft)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        using var ids = Tensor.FromArray(IdValues, [1, 8]);
        return peft.Forward(ids).Logits.ToFloatArray();
    }

    private static double RelErr(float[] a, float[] b)
    {
        double n = 0, d = 0;
        for (int i = 0; i < a.Length; i++) { n += Math.Pow(a[i] - b[i], 2); d += (double)b[i] * b[i]; }
        return Math.Sqrt(n / d);
    }

    [TestCase(Cases.Gpt2, "c_attn", false)]
    [TestCase(Cases.Llama, "q_proj,v_proj", false)]
    [TestCase(Cases.Llama, "q_proj,v_proj", true)]
    public void LoraTrainsInBf16OnABf16BaseAndMergesBack(string json, string targets, bool dora)
    {
        var dir = Directory.CreateTempSubdirectory("peft-bf16-").FullName;
        try
        {
            var model = Cases.Create(json);
            using var peft = PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = [.. targets.Split(',')], UseDora = dora, TaskType = "CAUSAL_LM" });
            peft.Eval();
            var f32Base = Logits(peft);
            long saved = MixedPrecision.StoreFrozenWeights(peft, DType.BF16);
            long linearBytes = peft.NamedParameters().Where(p => p.Parameter.DType == DType.BF16).Sum(p => p.Parameter.NumEl * 2);
            Assert.That(saved, Is.EqualTo(linearBytes).And.GreaterThan(0), "2 bytes saved per stored weight");
            Assert.That(peft.Parameters().Where(p => p.RequiresGrad).All(p => p.DType == DType.F32), "adapters stay F32 (PEFT's autocast_adapter_dtype)");
            Assert.That(RelErr(Logits(peft), f32Base), Is.LessThan(1e-2), "a bf16 base is bf16-close to the F32 one");

            peft.Train();
            using var opt = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 1e-2);
            using var ids = Tensor.FromArray(IdValues, [1, 8]);
            var (first, last) = TrainingProbe.Run(peft, 12, () =>
            {
                using (Autocast.Enable(DType.BF16)) return peft.Forward(ids, labels: ids).Loss!;
            }, opt.Step);
            Assert.That(last, Is.LessThan(first));
            Assert.That(peft.Parameters().Where(p => p.DType == DType.BF16).All(p => p.Grad == null), "no gradient for the frozen bf16 weights");

            peft.Eval();
            var unmerged = Logits(peft);
            peft.SavePretrained(dir);
            peft.MergeAdapter();
            Assert.That(RelErr(Logits(peft), unmerged), Is.LessThan(2e-2), "merged into bf16 storage: one more bf16 rounding");
            peft.UnmergeAdapter();
            using var reloaded = PeftModel.FromPretrained(Cases.Create(json), dir);
            reloaded.Eval();
            Assert.That(RelErr(Logits(reloaded), unmerged), Is.LessThan(2e-2), "the adapter (F32) reloads onto an F32 base");
        }
        finally { Directory.Delete(dir, true); }
    }
}
