using Peft.Transformers;

namespace Peft.Tests.Device;

/// <summary>
/// The meta device (<c>Tensor.DefaultDevice(Device.Meta)</c>): models and adapters built as shapes only give the
/// parameter counts of the real build, allocate nothing, and refuse to be read.
/// </summary>
[TestFixture, NonParallelizable]
public class MetaDeviceTests
{
    [TestCaseSource(typeof(Cases), nameof(Cases.All))]
    public void EveryTunerCaseCountsAsTheRealBuildWithoutAllocating(PeftCase c)
    {
        string real;
        using (var peft = PeftModel.Create(c.Model(), c.Config(true))) real = peft.TrainableParametersLine();
        long before = MemoryStats.LiveBytes, peak;
        MemoryStats.ResetPeak();
        using (Tensor.DefaultDevice(Peft.Core.Device.Meta))
        using (var meta = PeftModel.Create(c.Model(), c.Config(true)))
        {
            Assert.That(meta.TrainableParametersLine(), Is.EqualTo(real));
            Assert.That(meta.Parameters().All(p => p.Device == Peft.Core.Device.Meta), "every parameter is a meta tensor");
            peak = MemoryStats.PeakBytes;
        }
        Assert.That(peak - before, Is.LessThan(64 << 10), "the meta build allocated tensor memory");
    }

    [Test]
    public void ASevenBillionParameterLlamaIsCountedWithoutItsMemory()
    {
        var hf = HfConfig.FromJson("""
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096}
            """);
        long before = MemoryStats.LiveBytes;
        MemoryStats.ResetPeak();
        using (Tensor.DefaultDevice(Peft.Core.Device.Meta))
        using (var peft = PeftModel.Create(AutoModel.Create(hf), new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["q_proj", "v_proj"], TaskType = "CAUSAL_LM" }))
            Assert.That(peft.TrainableParametersLine(), Is.EqualTo("trainable params: 8,388,608 || all params: 6,746,804,224 || trainable%: 0.1243"));
        Assert.That(MemoryStats.PeakBytes - before, Is.LessThan(1 << 20));
    }

    [Test]
    public void MetaTensorsHaveShapesButNoElements()
    {
        using var scope = Tensor.NewScope();
        Tensor a, b;
        using (Tensor.DefaultDevice(Peft.Core.Device.Meta))
        {
            a = Tensor.Randn([3, 4]);
            b = Tensor.Ones([4, 5]);
        }
        using var c = a.MatMul(b).Softmax();
        Assert.That((c.Device, c.Shape), Is.EqualTo((Peft.Core.Device.Meta, new[] { 3, 5 })));
        Assert.That(Assert.Throws<MetaTensorException>(() => c.ToArray<float>())!.Message, Does.Contain("meta tensor has no elements"));
        Assert.That(Assert.Throws<MetaTensorException>(() => c.Sum().Item())!.Message, Does.Contain("meta tensor has no elements"));
        using var onCpu = Tensor.Ones([2]);
        Assert.That(onCpu.Device, Is.EqualTo(Peft.Core.Device.Cpu), "the default ends with its scope");
        Assert.Throws<NotSupportedException>(() => Tensor.DefaultDevice(Peft.Core.Device.Cuda(0)));
    }

    [Test]
    public void AnInitialisationThatReadsTheWeightsSaysSoOnTheMetaDevice()
    {
        using (Tensor.DefaultDevice(Peft.Core.Device.Meta))
        {
            var model = Cases.Create(Cases.Gpt2);
            Assert.Throws<MetaTensorException>(() => PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = ["c_attn"], InitLoraWeights = "pissa" }));
        }
    }
}
