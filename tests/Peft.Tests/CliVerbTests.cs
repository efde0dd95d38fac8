using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>The model verbs of the peft CLI on a tiny GPT-2 folder with the real GPT-2 tokenizer files.</summary>
[TestFixture]
public class CliVerbTests
{
    private string _dir = "";
    private string Model => Path.Combine(_dir, "gpt2");
    private string Adapter => Path.Combine(_dir, "adapter");

    [OneTimeSetUp]
    public void Build()
    {
        _dir = Directory.CreateTempSubdirectory("peft-cli-verbs-").FullName;
        CliHarness.SaveTinyGpt2(Model);
        using var peft = PeftModel.Create(AutoModel.FromPretrained(Model), new LoraConfig { R = 4, TargetModules = ["c_attn"], InitLoraWeights = "false", TaskType = "CAUSAL_LM" });
        peft.SavePretrained(Adapter);
    }

    [OneTimeTearDown]
    public void Clean() => Directory.Delete(_dir, true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    private static float[] Json(string text) => JsonNode.Parse(text)!.AsArray().Select(n => n!.GetValue<float>()).ToArray();

    private float[] LibraryLogits(bool withAdapter)
    {
        using var scope = Tensor.NewScope();
        using var model = AutoModel.FromPretrained(Model);
        using var ids = Tensor.FromArray(new long[] { 15496, 995 }, [1, 2]);
        if (!withAdapter) using (Autograd.NoGrad()) return model.Forward(ids).Logits.Select(1, 1).Select(0, 0).ToFloatArray();
        using var peft = PeftModel.FromPretrained(model, Adapter);
        using (Autograd.NoGrad()) return peft.Forward(ids).Logits.Select(1, 1).Select(0, 0).ToFloatArray();
    }

    [Test]
    public void ForwardPrintsTheLastPositionsLogitsAsJson()
    {
        var (code, stdout, stderr) = Run("forward", "--model", Model, "--input-ids", "15496,995", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        var logits = Json(stdout);
        Assert.That(logits, Has.Length.EqualTo(50257));
        Assert.That(logits, Is.EqualTo(LibraryLogits(false)).Within(1e-5));
        var withAdapter = Json(Run("forward", "--model", Model, "--adapter", Adapter, "--input-ids", "15496,995", "--json").Out);
        Assert.That(withAdapter, Is.EqualTo(LibraryLogits(true)).Within(1e-5));
        Assert.That(withAdapter, Is.Not.EqualTo(logits).Within(1e-5));
    }

    [Test]
    public void MergeWritesAPlainFolderThatBehavesLikeTheAdapter()
    {
        var merged = Path.Combine(_dir, "merged");
        var (code, _, stderr) = Run("merge", "--model", Model, "--adapter", Adapter, "--output", merged);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(File.Exists(Path.Combine(merged, "model.safetensors")) && File.Exists(Path.Combine(merged, "vocab.json")));
        var viaMerged = Json(Run("forward", "--model", merged, "--input-ids", "15496,995", "--json").Out);
        Assert.That(viaMerged, Is.EqualTo(LibraryLogits(true)).Within(1e-4));
    }

    [Test]
    public void GenerateIsDeterministicWhenGreedy()
    {
        var a = Run("generate", "--model", Model, "--adapter", Adapter, "--prompt", "Hello world", "--max-new-tokens", "5");
        Assert.That(a.Code, Is.EqualTo(0), a.Err);
        Assert.That(a.Out, Is.Not.Empty);
        Assert.That(Run("generate", "--model", Model, "--adapter", Adapter, "--prompt", "Hello world", "--max-new-tokens", "5").Out, Is.EqualTo(a.Out));
    }

    /// <summary>README's "Models from Hugging Face folders" sample, line for line (folder path substituted).</summary>
    [Test]
    public void TheReadmeModelSampleRuns()
    {
        var cwd = Environment.CurrentDirectory;
        Environment.CurrentDirectory = _dir;
        var console = Console.Out;
        var captured = new StringWriter();
        Console.SetOut(captured);
        try
        {
            Directory.CreateDirectory(Path.Combine(_dir, "path", "to"));
            if (!Directory.Exists(Path.Combine(_dir, "path", "to", "gpt2"))) CopyDir(Model, Path.Combine(_dir, "path", "to", "gpt2"));

            using var model = AutoModel.FromPretrained("path/to/gpt2");      // config.json + model.safetensors (or shards)
            var tokenizer = AutoTokenizer.FromPretrained("path/to/gpt2");    // vocab.json + merges.txt / tokenizer.model / vocab.txt
            using var ids = Tensor.FromArray(tokenizer.Encode("Hello world").Select(i => (long)i).ToArray(), [1, 2]);
            var next = TextGeneration.Generate(model, ids, new GenerationOptions { MaxNewTokens = 20, EosTokenIds = [50256] });
            Console.WriteLine(tokenizer.Decode(next[0]));

            Assert.That(next[0], Is.Not.Empty);
            Assert.That(captured.ToString(), Is.Not.Empty);
        }
        finally
        {
            Console.SetOut(console);
            Environment.CurrentDirectory = cwd;
        }
    }

    private static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    [Test]
    public void BadInputIsOneLineAndExitCode2()
    {
        foreach (var args in new[]
        {
            new[] { "forward", "--model", Path.Combine(_dir, "missing"), "--input-ids", "1" },
            new[] { "forward", "--model", Model, "--input-ids", "1,x" },
            new[] { "merge", "--model", Model, "--adapter", Path.Combine(_dir, "missing"), "--output", Path.Combine(_dir, "o") },
            new[] { "generate", "--model", _dir, "--prompt", "hi" },
        })
        {
            var (code, _, stderr) = Run(args);
            Assert.That(code, Is.EqualTo(2), string.Join(" ", args));
            Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
            Assert.That(stderr, Does.StartWith("error: "));
        }
    }

    [Test]
    public void InspectWithPeftPrintsPeftsTrainableLineEvenForAConfigOnlyFolder()
    {
        string expected;
        var config = PeftConfig.Load(Adapter);
        config.InferenceMode = false;   // counted as get_peft_model makes it (the saved file says inference_mode: true)
        using (var peft = PeftModel.Create(AutoModel.FromPretrained(Model), config))
            expected = peft.TrainableParametersLine();
        Assert.That(expected, Does.StartWith("trainable params: 1,024 ||"), "r = 4 on two c_attn 32 → 96: 2 · 4 · (32 + 96)");
        var (code, stdout, stderr) = Run("inspect", Model, "--peft", Path.Combine(Adapter, "adapter_config.json"));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout.Trim(), Is.EqualTo(expected));
        var configOnly = Path.Combine(_dir, "config-only");
        Directory.CreateDirectory(configOnly);
        File.Copy(Path.Combine(Model, "config.json"), Path.Combine(configOnly, "config.json"), overwrite: true);
        Assert.That(Run("inspect", configOnly, "--peft", Adapter).Out.Trim(), Is.EqualTo(expected), "no weights needed to count");
        Assert.That(Run("inspect", configOnly, "--peft", Path.Combine(_dir, "missing.json")).Code, Is.EqualTo(2));
    }

    [Test]
    public void InspectWithPeftCountsASeventyBillionParameterModelWithoutItsMemory()
    {
        // Llama-2-70B's config.json: the count is shape-only (meta tensors), so this needs no 276 GB.
        var folder = Path.Combine(_dir, "llama-70b");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), """
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 8192, "intermediate_size": 28672,
             "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
            """);
        var adapter = Path.Combine(_dir, "lora-70b.json");
        File.WriteAllText(adapter, """{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}""");
        long before = MemoryStats.LiveBytes;
        var (code, stdout, stderr) = Run("inspect", folder, "--peft", adapter);
        Assert.That(code, Is.EqualTo(0), stderr);
        // 68,976,648,192 base parameters (Llama-2-70B's published count) + 80 · 16 · ((8192 + 8192) + (8192 + 1024)).
        Assert.That(stdout.Trim(), Is.EqualTo("trainable params: 32,768,000 || all params: 69,009,416,192 || trainable%: 0.0475"));
        Assert.That(MemoryStats.LiveBytes - before, Is.LessThan(1 << 20));
    }

    [Test]
    public void InspectWithPeftCountsWeightDependentInitsOnARealBuild()
    {
        // PiSSA's initialisation reads the base weights (an SVD): the shape-only build cannot run it, a real one does.
        var adapter = Path.Combine(_dir, "pissa.json");
        File.WriteAllText(adapter, """{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "init_lora_weights": "pissa"}""");
        var (code, stdout, stderr) = Run("inspect", Model, "--peft", adapter);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout.Trim(), Does.StartWith("trainable params: 1,024 ||"));
    }

    [Test]
    public void BenchNamesItsSuitesAndRefusesUnknownOnes()
    {
        var (code, _, stderr) = Run("bench", "warp-speed");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stderr, Does.StartWith("error: unknown suite 'warp-speed'").And.Contain("tuner-layers").And.Contain("gemm"));
    }
}
