using Peft.Core.SafeTensors;
using Peft.Transformers;
using Peft.Transformers.Llama;

namespace Peft.Tests;

/// <summary>LLaMA-Adapter (adaption prompt) on the LLaMA model with grouped-query attention.</summary>
[TestFixture]
public class AdaptionPromptTests
{
    private static Tensor Ids() => Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]);

    private static float[] Logits(Func<ModelOutput> run) => TrainingProbe.Logits(run);

    private static AdaptionPromptConfig Config() => new() { AdapterLen = 3, AdapterLayers = 1, TaskType = "CAUSAL_LM" };

    [Test]
    public void TheZeroGateStartsAsTheBaseModelAndTheGatedPromptFollowsPeftsFormula()
    {
        using var scope = Tensor.NewScope();
        var ids = Ids();
        var baseLogits = Logits(() => Cases.Create(Cases.Llama).Forward(ids));
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), Config());
        Assert.That(Logits(() => peft.Forward(ids)), Is.EqualTo(baseLogits), "adaption_gate = 0 at init");
        Assert.That(peft.Model.GetSubmodule("model.layers.0.self_attn"), Is.InstanceOf<LlamaAttention>(), "only the top adapter_layers are wrapped");
        var wrapper = (AdaptedAttention)peft.Model.GetSubmodule("model.layers.1.self_attn");
        using (Autograd.NoGrad()) wrapper.GetSubmodule("adaption_gate").Parameter("default").FillInPlace(0.7);
        Assert.That(Logits(() => peft.Forward(ids)), Is.Not.EqualTo(baseLogits));

        // The wrapper's output against the formula, written out here with the layer's own projections.
        var x = Tensor.Randn([2, 4, 16], 3);
        using var _ = Autograd.NoGrad();
        var attn = wrapper.Attention;
        var rope = new RotaryEmbedding(attn.Config.HeadDim, attn.Config.RopeTheta, attn.Config.RopeScaling, attn.Config.Path);
        var (cos, sin) = rope.Tables(0, 4);
        var got = wrapper.Forward(x, cos, sin, null, null).ToFloatArray();
        var plain = attn.Forward(x, cos, sin, null, null);
        var prompt = wrapper.GetSubmodule("adaption_prompt").Parameter("default");             // [1, 3, 16]
        var k = ((Peft.Nn.IUnaryModule)attn.GetSubmodule("k_proj")).Forward(prompt).Reshape(1, 3, 2, 4).Transpose(1, 2);  // kv heads 2, head_dim 4
        var v = ((Peft.Nn.IUnaryModule)attn.GetSubmodule("v_proj")).Forward(prompt).Reshape(1, 3, 2, 4).Transpose(1, 2);
        var kRep = LlamaAttention.RepeatKv(k, 2);
        var vRep = LlamaAttention.RepeatKv(v, 2);
        var q = attn.QueryStates(x, cos, sin);
        var probs = (q.MatMul(kRep.Transpose(2, 3)) * (1 / Math.Sqrt(4))).Softmax(-1) * 0.7;
        var mixed = probs.MatMul(vRep).Transpose(1, 2).Reshape(2, 4, 16);
        var expected = plain + ((Peft.Nn.IUnaryModule)attn.GetSubmodule("o_proj")).Forward(mixed);
        Assert.That(got, Is.EqualTo(expected.ToFloatArray()).Within(1e-5));
    }

    [Test]
    public void TrainsOnlyThePromptAndGateSavesPeftsKeysReloadsAndGenerates()
    {
        var dir = Directory.CreateTempSubdirectory("peft-adaption-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            var ids = Ids();
            float[] trained;
            int[][] generated;
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new AdaptionPromptConfig { AdapterLen = 3, AdapterLayers = 2, TaskType = "CAUSAL_LM" }))
            {
                var (first, last) = TrainingProbe.Run(peft, 6, () => peft.Forward(ids, labels: ids).Loss!, TrainingProbe.Sgd(peft, 0.5),
                    () => TrainingProbe.OnlyTheseHaveGradients(peft, name => name.Contains(".adaption_")));
                Assert.That(last, Is.LessThan(first));
                Assert.That(peft.GetNbTrainableParameters().Trainable, Is.EqualTo(2 * (3 * 16 + 1)));
                peft.Eval();
                trained = Logits(() => peft.Forward(ids));
                generated = peft.Generate(ids, new GenerationOptions { MaxNewTokens = 3 });
                Assert.Throws<NotSupportedException>(() => peft.MergeAdapter());
                peft.SavePretrained(dir);
            }
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                Assert.That(st.Tensors.Select(t => t.Name).Order(), Is.EqualTo(new[]
                {
                    "base_model.model.model.layers.0.self_attn.adaption_gate", "base_model.model.model.layers.0.self_attn.adaption_prompt",
                    "base_model.model.model.layers.1.self_attn.adaption_gate", "base_model.model.model.layers.1.self_attn.adaption_prompt",
                }));
                Assert.That(st.Info("base_model.model.model.layers.1.self_attn.adaption_prompt").Shape, Is.EqualTo(new[] { 1, 3, 16 }));
            }
            using var loaded = PeftModel.FromPretrained(Cases.Create(Cases.Llama), dir);
            Assert.That(Logits(() => loaded.Forward(ids)), Is.EqualTo(trained).Within(1e-6));
            Assert.That(loaded.Generate(ids, new GenerationOptions { MaxNewTokens = 3 }), Is.EqualTo(generated));
            using var unloaded = loaded.Unload();
            Assert.That(unloaded.NamedModules().Any(m => m.Module is AdaptedAttention), Is.False);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ModelsWithoutLlamaAttentionAndTooManyLayersAreRefused()
    {
        Assert.That(Assert.Throws<NotSupportedException>(() => PeftModel.Create(Cases.Create(Cases.Gpt2), Config()))!.Message, Does.Contain("self_attn"));
        Assert.That(Assert.Throws<ArgumentException>(() => PeftModel.Create(Cases.Create(Cases.Llama), new AdaptionPromptConfig { AdapterLen = 2, AdapterLayers = 5 }))!.Message,
            Does.Contain("adapter_layers (5)"));
    }
}
