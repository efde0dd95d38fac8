using System.Text;
using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests.Reliability;

/// <summary>
/// Mutated inputs to every parser a user hands a file to: the only acceptable outcomes are success or the library's
/// typed exception naming the file. Iterations per parser: PEFT_FUZZ_ITERATIONS (default 1,000 in the test suite;
/// the long run is `PEFT_FUZZ_ITERATIONS=100000 dotnet test tests/Peft.Tests --filter FuzzTests`).
/// </summary>
[TestFixture]
public class FuzzTests
{
    private static int Iterations => int.TryParse(Environment.GetEnvironmentVariable("PEFT_FUZZ_ITERATIONS"), out int n) ? n : 1000;

    private string _dir = "";

    [SetUp] public void SetUp() => _dir = Directory.CreateTempSubdirectory("peft-fuzz-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_dir, true);

    private static byte[] ValidSafeTensors(string dir)
    {
        using var scope = Tensor.NewScope();
        var p = Path.Combine(dir, "seed.safetensors");
        SafeTensorsWriter.Save(p, new Dictionary<string, Tensor>
        {
            ["a.weight"] = Tensor.Randn([3, 4], 1), ["b"] = Tensor.Arange(5), ["c"] = Tensor.Randn([2], 2, DType.BF16),
        }, new Dictionary<string, string> { ["format"] = "pt" });
        return File.ReadAllBytes(p);
    }

    [Test]
    public void SafeTensorsReaderOnlyEverThrowsItsFormatException()
    {
        var seed = ValidSafeTensors(_dir);
        var mutator = new Mutator(2026);
        var path = Path.Combine(_dir, "fuzz.safetensors");
        int rejected = 0;
        for (int i = 0; i < Iterations; i++)
        {
            var bytes = mutator.Mutate(seed);
            File.WriteAllBytes(path, bytes);
            try
            {
                using var scope = Tensor.NewScope();
                using var f = SafeTensorsFile.Open(path);
                foreach (var t in f.Tensors) if (t.DType != null) f.Load(t.Name).ToDoubleArray();
            }
            catch (SafeTensorsFormatException) { rejected++; }
            catch (Exception e)
            {
                Assert.Fail($"iteration {i} (mutator seed 2026): {e.GetType().Name}: {e.Message}\ninput (base64): {Convert.ToBase64String(bytes)}");
            }
        }
        TestContext.Out.WriteLine($"{Iterations} mutated safetensors files: {rejected} rejected with SafeTensorsFormatException, {Iterations - rejected} read, no other outcome");
        Assert.That(rejected, Is.GreaterThan(Iterations / 10), "the mutations do reach the validation");
    }

    [Test]
    public void DataLoadersOnlyEverThrowTheirFormatException()
    {
        var seeds = new (string Ext, string Task, string Text)[]
        {
            (".jsonl", "seq-cls", "{\"text\": \"my order never arrived\", \"label\": \"complaint\"}\n{\"sentence\": \"thanks\", \"label\": 1}\n"),
            (".jsonl", "causal-lm", "{\"prompt\": \"Q: late? A:\", \"completion\": \" yes\"}\n{\"text\": \"plain text\"}\n"),
            (".jsonl", "seq2seq", "{\"source\": \"translate: hi\", \"target\": \"salut\"}\n{\"input\": \"a\", \"output\": \"b\"}\n"),
            (".jsonl", "token-cls", "{\"tokens\": [\"my\", \"order\"], \"tags\": [\"O\", \"ITEM\"]}\n"),
            (".csv", "seq-cls", "text,label\n\"broken, really\",complaint\nfine,no complaint\n"),
            (".csv", "seq2seq", "source,target\nhello,bonjour\n\"a \"\"quoted\"\" word\",b\n"),
        };
        var mutator = new Mutator(11);
        int rejected = 0, loaded = 0;
        for (int i = 0; i < Iterations; i++)
        {
            var (ext, task, text) = seeds[i % seeds.Length];
            var bytes = mutator.Mutate(Encoding.UTF8.GetBytes(text));
            var path = Path.Combine(_dir, "data" + ext);
            File.WriteAllBytes(path, bytes);
            try
            {
                loaded += Peft.Cli.Training.TrainingData.Load(path, task).Count > 0 ? 1 : 0;
            }
            catch (Peft.Cli.Training.DataFormatException e) when (e.Message.StartsWith(path, StringComparison.Ordinal)) { rejected++; }
            catch (Exception e) { Assert.Fail($"data iteration {i} ({task}, {ext}): {e.GetType().Name}: {e.Message}\n{Encoding.Latin1.GetString(bytes)}"); }
        }
        TestContext.Out.WriteLine($"{Iterations} mutated data files: {rejected} rejected with DataFormatException, {loaded} loaded, no other outcome");
        Assert.That(rejected, Is.GreaterThan(Iterations / 10), "the mutations reach the rejections");
        Assert.That(loaded, Is.GreaterThan(Iterations / 20), "and the happy path");
    }

    [Test]
    public void AdapterAndModelConfigsOnlyEverThrowTypedExceptions()
    {
        var adapterSeed = Encoding.UTF8.GetBytes(new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj"], TaskType = "CAUSAL_LM", LayersToTransform = [0, 1] }.ToJsonString());
        var modelSeed = Encoding.UTF8.GetBytes("""{"model_type": "llama", "vocab_size": 60, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}""");
        var mutator = new Mutator(7);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        long built = 0, largest = 0, tooLarge = 0, limit = MemoryStats.Limit;
        for (int i = 0; i < Iterations; i++)
        {
            // Long runs report the process's resident memory as they go (it must stay flat: nothing a fuzzed input
            // builds may outlive the iteration).
            if (i % 1000 == 0 && Iterations > 1000)
                TestContext.Progress.WriteLine($"config fuzz {i}: RSS {Environment.WorkingSet / 1048576} MB, live tensors {MemoryStats.LiveBytes / 1048576} MB, {built} models built (largest {largest:N0} parameters), {tooLarge} refused as too large, {sw.Elapsed.TotalSeconds:F0} s");
            var adapterBytes = mutator.Mutate(adapterSeed);
            File.WriteAllBytes(Path.Combine(_dir, "adapter_config.json"), adapterBytes);
            try { PeftConfig.Load(_dir); }
            catch (PeftConfigException) { }
            catch (NotSupportedException) { }
            catch (Exception e) { Assert.Fail($"adapter config iteration {i}: {e.GetType().Name}: {e.Message}\n{Encoding.Latin1.GetString(adapterBytes)}"); }

            var modelBytes = mutator.Mutate(modelSeed);
            File.WriteAllBytes(Path.Combine(_dir, "config.json"), modelBytes);
            try
            {
                var config = HfConfig.Load(_dir);
                // Building the model is where sizes are used, and a fuzzed size (or a mutated key that falls back to a
                // 4096-wide default) can ask for a model of any size. The library refuses what does not fit under
                // MemoryStats.Limit with InsufficientMemoryException; lowering the limit to 64 MiB here makes that refusal
                // come early, so the fuzz tests the parser rather than building 1 GB models. (Capping the fuzzed values
                // instead still let 312 M-parameter models through: a 10,000-input run spent minutes building them and
                // its RSS rose past 6 GB — transiently, not a leak.)
                MemoryStats.Limit = MemoryStats.LiveBytes + (64L << 20);
                using var m = AutoModel.Create(config);
                built++;
                if (m.CountParameters() > largest && Iterations > 1000)
                    TestContext.Progress.WriteLine($"  largest so far: {m.CountParameters():N0} parameters from {config.Json.ToJsonString()}");
                largest = Math.Max(largest, m.CountParameters());
            }
            catch (InsufficientMemoryException) { tooLarge++; }
            catch (Exception e) when (e is ConfigException or ShapeMismatchException or ArgumentException or NotSupportedException) { }
            catch (Exception e) { Assert.Fail($"model config iteration {i}: {e.GetType().Name}: {e.Message}\n{Encoding.Latin1.GetString(modelBytes)}"); }
            finally
            {
                MemoryStats.Limit = limit;
                CpuAllocator.EmptyCache();   // fuzzed sizes would fill the block cache up to its 4 GiB cap: not what this tests
            }
        }
        TestContext.Out.WriteLine($"{Iterations} mutated adapter configs and model configs: {built} models built (largest {largest:N0} parameters), {tooLarge} refused with InsufficientMemoryException, no untyped exception");
    }
}
