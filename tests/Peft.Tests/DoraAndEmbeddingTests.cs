using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

[TestFixture]
public class DoraAndEmbeddingTests
{
    [Test]
    public void DoraOutputIsTheMagnitudeTimesTheNormalisedAdaptedWeight()
    {
        using var scope = Tensor.NewScope();
        var layer = new LoraLinear(new Linear(6, 5));
        layer.UpdateLayer("default", r: 3, alpha: 6, dropout: 0, init: "false", useRslora: false, loraBias: false, useDora: true);
        layer.ActiveAdapters.Add("default");
        using (Autograd.NoGrad()) layer.GetSubmodule("lora_magnitude_vector.default").Parameter("weight").MulInPlace(1.7);
        var x = Tensor.Randn([4, 6], 9);
        var y = layer.Forward(x);
        // Closed form: y = m ⊙ ((W + sBA)·x) / ‖W + sBA‖_row + b.
        var baseLin = (Linear)layer.BaseLayer;
        var a = layer.GetSubmodule("lora_A.default").Parameter("weight");
        var b = layer.GetSubmodule("lora_B.default").Parameter("weight");
        var w = baseLin.Weight + b.MatMul(a) * layer.Scaling("default");
        var m = layer.GetSubmodule("lora_magnitude_vector.default").Parameter("weight");
        var expected = x.MatMul(w.Transpose(0, 1)) * (m / w.Norm(2, [1])) + baseLin.Bias!;
        Assert.That(y.ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-5));
        layer.Dispose();
    }

    [Test]
    public void DoraMagnitudeGradientMatchesFiniteDifferences()
    {
        using var scope = Tensor.NewScope();
        var layer = new LoraLinear(new Linear(6, 5));
        layer.UpdateLayer("default", 3, 6, 0, "false", false, false, useDora: true);
        layer.ActiveAdapters.Add("default");
        layer.ToDType(DType.F64);
        var x = Tensor.Randn([4, 6], 9, DType.F64);
        var weights = Tensor.Randn([4, 5], 10, DType.F64);
        var m = layer.GetSubmodule("lora_magnitude_vector.default").Parameter("weight");
        (layer.Forward(x) * weights).Sum().Backward();
        var grad = m.Grad!.ToArray<double>();
        for (int i = 0; i < 5; i++)
        {
            using var _ = Autograd.NoGrad();
            double orig = m.Narrow(0, i, 1).Item();
            double Eval(double v) { m.Narrow(0, i, 1).FillInPlace(v); using var s = Tensor.NewScope(); return (layer.Forward(x) * weights).Sum().Item(); }
            double numeric = (Eval(orig + 1e-6) - Eval(orig - 1e-6)) / 2e-6;
            Eval(orig);
            Assert.That(grad[i], Is.EqualTo(numeric).Within(1e-7 + 1e-6 * Math.Abs(numeric)));
        }
        layer.Dispose();
    }

    [Test]
    public void DoraAndEmbeddingAdaptersAreSavedUnderPeftsKeys()
    {
        var dir = Directory.CreateTempSubdirectory("peft-keys-").FullName;
        try
        {
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, TargetModules = ["embed_tokens", "q_proj"], UseDora = false }))
                peft.SavePretrained(dir);
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                Assert.That(st.Info("base_model.model.model.embed_tokens.lora_embedding_A").Shape, Is.EqualTo(new[] { 2, 60 }));
                Assert.That(st.Info("base_model.model.model.embed_tokens.lora_embedding_B").Shape, Is.EqualTo(new[] { 16, 2 }));
                Assert.That(st.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
            }
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, TargetModules = ["v_proj"], UseDora = true }))
            {
                var m = peft.StateDict()["base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector.default.weight"];
                var w = peft.StateDict()["base_model.model.model.layers.1.self_attn.v_proj.base_layer.weight"];
                Assert.That(m.ToArray<float>(), Is.EqualTo(w.Norm(2, [1]).ToArray<float>()).Within(1e-6), "m starts as ‖W‖ per row");
                peft.SavePretrained(dir);
            }
            using var dora = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.That(dora.Info("base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector").Shape, Is.EqualTo(new[] { 8 }));
        }
        finally { Directory.Delete(dir, true); }
    }
}
