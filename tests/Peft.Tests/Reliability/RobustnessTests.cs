using Peft.Core.Random;
using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests.Reliability;

[TestFixture]
public class RobustnessTests
{
    /// <summary>Bad input to the API: each case gives a typed exception whose message names the thing at fault.</summary>
    public static IEnumerable<TestCaseData> BadInput()
    {
        yield return new TestCaseData(new TestDelegate(() => Tensor.Zeros([2, 3]).MatMul(Tensor.Zeros([4, 2]))), typeof(ShapeMismatchException), "[2, 3]").SetName("shape_mismatch_matmul");
        yield return new TestCaseData(new TestDelegate(() => Tensor.Zeros([2]).Add(Tensor.Zeros([2], DType.F64))), typeof(DTypeMismatchException), "F64").SetName("dtype_mismatch");
        yield return new TestCaseData(new TestDelegate(() => PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { TargetModules = ["nope"] })), typeof(ArgumentException), "nope").SetName("targets_nothing");
        yield return new TestCaseData(new TestDelegate(() => PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 1000, TargetModules = ["q_proj"] })), typeof(ArgumentException), "model.layers.0.self_attn.q_proj").SetName("rank_larger_than_layer");
        yield return new TestCaseData(new TestDelegate(() => Cases.Create(Cases.Gpt2).Forward(Tensor.FromArray(new long[] { 99 }, [1, 1]))), typeof(IndexOutOfRangeException), "99").SetName("token_id_out_of_vocabulary");
        yield return new TestCaseData(new TestDelegate(() => Cases.Create(Cases.Gpt2).Forward(Tensor.Zeros([1, 40], DType.I64))), typeof(ArgumentException), "n_positions").SetName("sequence_too_long");
        yield return new TestCaseData(new TestDelegate(() => new LoraConfig { R = 4, Bias = "some" }.Validate()), typeof(InvalidOperationException), "bias").SetName("bad_bias_mode");
    }

    [TestCaseSource(nameof(BadInput))]
    public void BadInputGivesATypedExceptionNamingTheCulprit(TestDelegate call, Type expected, string named)
    {
        using var scope = Tensor.NewScope();
        var ex = Assert.Catch(call);
        Assert.That(ex, Is.InstanceOf(expected));
        Assert.That(ex!.Message, Does.Contain(named));
    }

    [Test]
    public void AModelThatDoesNotFitIsATypedErrorNotAKilledProcess()
    {
        long saved = MemoryStats.Limit;
        try
        {
            MemoryStats.Limit = MemoryStats.LiveBytes + (8 << 20);   // pretend 8 MiB are left
            // Small embeddings first, then 8 MiB MLP matrices: the refusal comes part-way through the build.
            var huge = HfConfig.FromJson("""{"model_type": "llama", "vocab_size": 100, "hidden_size": 512, "intermediate_size": 4096, "num_hidden_layers": 4, "num_attention_heads": 8}""");
            long before = MemoryStats.LiveBytes;
            var ex = Assert.Throws<InsufficientMemoryException>(() => AutoModel.Create(huge));
            Assert.That(ex!.Message, Does.Contain("MiB tensor").And.Contain("MemoryStats.Limit"));
            Assert.That(MemoryStats.LiveBytes, Is.EqualTo(before), "what was built before the refusal is freed at once, not by the GC");
        }
        finally { MemoryStats.Limit = saved; }
        Assert.That(MemoryStats.Limit, Is.LessThan(long.MaxValue).And.GreaterThan(1L << 30), "the default follows the machine's memory");
    }

    [Test]
    public void TheSameSeedGivesBitIdenticalAdaptersAfterTraining()
    {
        var dir = Directory.CreateTempSubdirectory("peft-repro-").FullName;
        try
        {
            byte[] Train(string name)
            {
                Generator.Default.ManualSeed(11);
                using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn", "c_fc"], LoraDropout = 0.1, TaskType = "CAUSAL_LM" });
                using var opt = new Peft.Nn.AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 1e-2);
                var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2 }, [2, 4]);
                for (int step = 0; step < 50; step++)
                {
                    using var scope = Tensor.NewScope();
                    opt.ZeroGrad();
                    peft.Forward(ids, labels: ids).Loss!.Backward();  // dropout draws from the seeded Philox stream
                    opt.Step();
                }
                ids.Dispose();
                peft.SavePretrained(Path.Combine(dir, name));
                return File.ReadAllBytes(Path.Combine(dir, name, "adapter_model.safetensors"));
            }
            Assert.That(Train("b"), Is.EqualTo(Train("a")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ManyThreadsGeneratingWithOneMergedModelAgreeWithOne()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" });
        using var model = peft.MergeAndUnload();
        model.Eval();
        int[] Generate(long seedToken)
        {
            using var ids = Tensor.FromArray(new long[] { seedToken, 9, 4 }, [1, 3]);
            return TextGeneration.Generate(model, ids, new GenerationOptions { MaxNewTokens = 12 })[0];
        }
        var expected = Enumerable.Range(1, 8).Select(s => Generate(s)).ToArray();
        var results = new int[8][];
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => results[i] = Generate(i + 1));
        Assert.That(results, Is.EqualTo(expected));
    }
}
