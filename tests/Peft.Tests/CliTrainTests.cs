using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary><c>peft train --model --data</c> on small folders: every task's data format, methods, outputs and bad input.</summary>
[TestFixture]
public class CliTrainTests
{
    private string _dir = "";
    private string Bert => Path.Combine(_dir, "demo", "base-model");
    private string Gpt2 => Path.Combine(_dir, "gpt2");

    private static readonly string[] Complaints = ["my order never arrived and nobody answers", "the package was broken", "terrible service I want a refund", "still waiting for my refund"];
    private static readonly string[] Praise = ["thanks for the quick delivery", "love the new update", "the support team was very helpful", "happy with my purchase"];

    [OneTimeSetUp]
    public void Build()
    {
        _dir = Directory.CreateTempSubdirectory("peft-cli-train-").FullName;
        // The demo writes a BERT-shaped model with a WordPiece vocabulary: a realistic seq-cls / token-cls folder.
        Assert.That(Run("train", "--output", Path.Combine(_dir, "demo"), "--epochs", "1").Code, Is.EqualTo(0));
        CliHarness.SaveTinyGpt2(Gpt2);
        var lines = Enumerable.Range(0, 24).Select(i => new JsonObject { ["text"] = (i % 2 == 0 ? Complaints : Praise)[i / 2 % 4], ["label"] = i % 2 == 0 ? "complaint" : "no complaint" }.ToJsonString());
        File.WriteAllLines(Path.Combine(_dir, "cls.jsonl"), lines);
        File.WriteAllLines(Path.Combine(_dir, "cls.csv"), ["text,label", .. Enumerable.Range(0, 12).Select(i => $"\"{(i % 2 == 0 ? Complaints : Praise)[i / 2 % 4]}, really\",{(i % 2 == 0 ? "complaint" : "no complaint")}")]);
        File.WriteAllLines(Path.Combine(_dir, "lm.jsonl"), Enumerable.Range(0, 12).Select(i => new JsonObject { ["prompt"] = $"Q: is message {i} a complaint? A:", ["completion"] = i % 2 == 0 ? " yes" : " no" }.ToJsonString()));
        File.WriteAllLines(Path.Combine(_dir, "ner.jsonl"), Enumerable.Range(0, 12).Select(i => new JsonObject
        {
            ["tokens"] = new JsonArray("my", "order", "never", "arrived"), ["tags"] = new JsonArray("O", i % 2 == 0 ? "ITEM" : "O", "O", "O"),
        }.ToJsonString()));
    }

    [OneTimeTearDown]
    public void Clean() => Directory.Delete(_dir, true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    [TestCase("lora", "f32", false, "none")]
    [TestCase("ia3", "f32", false, "none")]
    [TestCase("lora", "bf16", true, "none")]
    [TestCase("lora", "f32", false, "nf4")]
    [TestCase("lora", "f32", false, "nf4-dq")]
    [TestCase("lora", "f32", false, "int8")]
    public void TrainingOnADeviceSavesTheCpusAdapter(string method, string precision, bool checkpointing, string quantize)
    {
        // The runner's device path (model, batches and optimizer moved; the adapter saved from the device) on the
        // host-memory stand-in for a GPU: the saved adapter equals the CPU run's. Quantized bases keep their codes on
        // the device and dequantize there (QLoRA on a GPU).
        Cli.Training.TrainOptions Options(string output, Peft.Core.Device? device) => new(Bert, Path.Combine(_dir, "cls.jsonl"), null, method, null, 4, 8, null,
            2, 5e-3, 4, 32, quantize == "nf4-dq" ? "nf4" : quantize, output, 42, 0.25, Precision: precision, GradientCheckpointing: checkpointing, Device: device,
            DoubleQuant: quantize == "nf4-dq");
        var cpuDir = Path.Combine(_dir, $"device-cpu-{method}-{precision}-{quantize}");
        var devDir = Path.Combine(_dir, $"device-emulated-{method}-{precision}-{quantize}");
        Assert.That(Cli.Training.TrainRunner.Run(Options(cpuDir, null), new Cli.Training.PlainProgress(TextWriter.Null), TextWriter.Null), Is.EqualTo(0));
        var (emulated, registration) = Device.EmulatedDevice.Install();
        using (registration)
        {
            var log = new StringWriter();
            Assert.That(Cli.Training.TrainRunner.Run(Options(devDir, Device.EmulatedDevice.Target), new Cli.Training.PlainProgress(log), log), Is.EqualTo(0), log.ToString());
            Assert.That(log.ToString(), Does.Contain("device: cuda:0"));
            Assert.That(emulated.Calls.GetValueOrDefault("MatMul"), Is.GreaterThan(0), "the model ran on the device");
            if (quantize != "none")
                Assert.That(emulated.Calls.GetValueOrDefault(quantize == "int8" ? "DequantizeInt8" : "DequantizeNf4"), Is.GreaterThan(0), "the base dequantized on the device");
            if (quantize == "nf4-dq") Assert.That(emulated.Calls.GetValueOrDefault("DequantizeBlockwise8"), Is.GreaterThan(0));
        }
        using var want = Peft.Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(cpuDir, PeftModel.WeightsFileName));
        using var got = Peft.Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(devDir, PeftModel.WeightsFileName));
        Assert.That(got.Tensors.Select(t => t.Name), Is.EquivalentTo(want.Tensors.Select(t => t.Name)));
        foreach (var info in want.Tensors)
        {
            using var a = got.Load(info.Name);
            using var b = want.Load(info.Name);
            Assert.That(TestSupport.DeviceParity.RelativeError(a.ToDoubleArray(), b.ToDoubleArray()), Is.LessThanOrEqualTo(1e-4), info.Name);
        }
    }

    [TestCase("loha")]
    [TestCase("lokr")]
    [TestCase("adalora")]
    [TestCase("ia3")]
    [TestCase("vera")]
    [TestCase("oft")]
    [TestCase("boft")]
    [TestCase("prompt")]
    [TestCase("ptuning")]
    public void SequenceClassificationTrainsSavesAndReloadsWithEveryMethod(string method)
    {
        var output = Path.Combine(_dir, "out-" + method);
        var (code, stdout, stderr) = Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--method", method, "--epochs", "2", "--lr", "5e-3", "--r", "4", "--output", output);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("task seq-cls").And.Contain("trainable params: ").And.Contain("after training: loss").And.Contain("accuracy").And.Contain("macro-F1"));
        Assert.That(stdout, Does.Contain("epoch 2/2"));
        Assert.That(stdout, Does.Match(@"throughput: [\d,]+ tokens in \d+ steps"));
        foreach (var f in new[] { "adapter_config.json", "adapter_model.safetensors", "loss.png" }) Assert.That(File.Exists(Path.Combine(output, f)), f);
        Assert.That(File.ReadAllBytes(Path.Combine(output, "loss.png")).Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }));
        var config = PeftConfig.Load(output);
        var peftType = method switch { "ia3" => "IA3", "prompt" => "PROMPT_TUNING", "ptuning" => "P_TUNING", _ => method.ToUpperInvariant() };
        Assert.That((config.PeftType, config.TaskType), Is.EqualTo((peftType, "SEQ_CLS")));
        // The saved adapter loads onto the folder's model with the labels the run gave it.
        using var model = AutoModel.FromPretrained(Bert, ModelTask.SequenceClassification);
        using var peft = PeftModel.FromPretrained(model, output);
        Assert.That(peft.GetNbTrainableParameters().Trainable, Is.EqualTo(0));
    }

    [Test]
    public void CsvDataAndLearningLowersTheEvaluationLoss()
    {
        var (code, stdout, stderr) = Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--eval-data", Path.Combine(_dir, "cls.csv"),
            "--epochs", "12", "--lr", "1e-2", "--output", Path.Combine(_dir, "out-csv"));
        Assert.That(code, Is.EqualTo(0), stderr);
        double Loss(string prefix) => double.Parse(stdout.Split('\n').First(l => l.StartsWith(prefix)).Split("loss ")[1].Split(',')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(Loss("after training"), Is.LessThan(Loss("before training")));
    }

    [Test]
    public void SchedulesAccumulationAndClippingAreOptions()
    {
        var (code, stdout, stderr) = Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--schedule", "cosine", "--warmup-steps", "2",
            "--grad-accum", "2", "--max-grad-norm", "0.5", "--epochs", "2", "--output", Path.Combine(_dir, "out-sched"));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("epoch 2/2"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--schedule", "polynomial").Err, Does.Contain("unknown learning-rate schedule"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--grad-accum", "0").Code, Is.EqualTo(2));
    }

    [TestCase("--dtype", "bf16", "mixed precision bf16: frozen weight matrices stored in bf16")]
    [TestCase("--dtype", "f16", "dynamic loss scaling")]
    [TestCase("--quantize", "nf4", "to nf4, double-quantized absmax")]
    [TestCase("--quantize", "int8", "to int8, outlier threshold 6")]
    [TestCase("--gradient-checkpointing", "", "gradient checkpointing: 1 layer stacks recompute")]
    public void MixedPrecisionAndQuantizedBasesTrainFromTheCommandLine(string option, string value, string expected)
    {
        var output = Path.Combine(_dir, "out-" + option.TrimStart('-') + value);
        string[] extra = value == "nf4" ? ["--double-quant"] : [];
        string[] given = value == "" ? [option] : [option, value];
        var (code, stdout, stderr) = Run(["train", "--model", Gpt2, "--data", Path.Combine(_dir, "lm.jsonl"), "--epochs", "1", .. given, .. extra, "--output", output]);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain(expected).And.Contain("after training: loss"));
        if (option == "--quantize") Assert.That(stdout, Does.Contain("quantized 8 linear layers"), "GPT-2's Conv1D layers: c_attn, attn.c_proj, c_fc, mlp.c_proj in each of 2 blocks");
        Assert.That(File.Exists(Path.Combine(output, "adapter_model.safetensors")));
        Assert.That(Run("train", "--model", Gpt2, "--data", Path.Combine(_dir, "lm.jsonl"), "--dtype", "f8").Err, Does.Contain("--dtype must be f32, bf16 or f16"));
    }

    [Test]
    public void CausalLmPromptCompletionAndTokenClassificationRun()
    {
        var (code, stdout, stderr) = Run("train", "--model", Gpt2, "--data", Path.Combine(_dir, "lm.jsonl"), "--epochs", "1", "--output", Path.Combine(_dir, "out-lm"));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("task causal-lm").And.Contain("perplexity"));
        Assert.That(PeftConfig.Load(Path.Combine(_dir, "out-lm")) is LoraConfig { TargetModules: ["c_attn"] }, "GPT-2's default LoRA target, as PEFT");

        foreach (var method in new[] { "prompt", "ptuning", "prefix" })
        {
            var output = Path.Combine(_dir, "out-lm-" + method);
            (code, stdout, stderr) = Run("train", "--model", Gpt2, "--data", Path.Combine(_dir, "lm.jsonl"), "--method", method, "--virtual-tokens", "4", "--epochs", "1", "--output", output);
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(PeftConfig.Load(output), Is.InstanceOf<PromptLearningConfig>().And.Property("NumVirtualTokens").EqualTo(4));
            var generated = Run("generate", "--model", Gpt2, "--adapter", output, "--prompt", "Q: is it a complaint? A:", "--max-new-tokens", "3");
            Assert.That(generated.Code, Is.EqualTo(0), generated.Err);
        }

        (code, stdout, stderr) = Run("train", "--model", Bert, "--task", "token-cls", "--data", Path.Combine(_dir, "ner.jsonl"), "--epochs", "1", "--output", Path.Combine(_dir, "out-ner"));
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("task token-cls").And.Contain("accuracy"));
    }

    [Test]
    public void BadInputGivesOneLineAndExitCodeTwo()
    {
        var bad = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllLines(bad, ["{\"text\": \"fine\", \"label\": \"0\"}", "{not json"]);
        var (code, _, stderr) = Run("train", "--model", Bert, "--data", bad);
        Assert.That((code, stderr.Trim()), Is.EqualTo((2, stderr.Trim())));
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("bad.jsonl:2"));
        Assert.That(stderr.Trim().Split('\n'), Has.Length.EqualTo(1));

        File.WriteAllLines(bad, ["{\"sentence_typo\": \"x\", \"label\": 1}"]);
        Assert.That(Run("train", "--model", Bert, "--data", bad).Err, Does.Contain("bad.jsonl:1").And.Contain("'text'"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--method", "magic").Err, Does.Contain("unknown --method 'magic'"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--method", "mpt").Err, Does.Contain("not in this build yet"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--method", "prefix").Err, Does.Contain("past keys/values"), "BERT's attention takes no prefix here");
        Assert.That(Run("train", "--model", Gpt2, "--data", Path.Combine(_dir, "lm.jsonl"), "--method", "llama-adapter").Err, Does.Contain("LLaMA-family attention"));
        Assert.That(Run("train", "--model", Path.Combine(_dir, "nope"), "--data", Path.Combine(_dir, "cls.jsonl")).Code, Is.EqualTo(2));
        Assert.That(Run("train", "--model", Bert).Err, Does.Contain("--data is required"));
        File.WriteAllLines(bad, ["{\"text\": \"a\", \"label\": \"x\"}", "{\"text\": \"b\", \"label\": \"y\"}", "{\"text\": \"c\", \"label\": \"z\"}"]);
        Assert.That(Run("train", "--model", Bert, "--data", bad).Err, Does.Contain("the data has 3 labels").And.Contain("head has 2"));
        if (!Peft.Cuda.CudaDevice.IsAvailable(out _))
        {
            var (exit, _, err) = Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--device", "cuda");
            Assert.That(exit, Is.EqualTo(3), "a machine without the device says so with its own code");
            Assert.That(err, Does.Contain("--device cuda: no such CUDA device here"));
        }
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--device", "gpu").Err, Does.Contain("--device must be cpu, cuda or cuda:N, got 'gpu'"));
        Assert.That(Run("train", "--model", Bert, "--data", Path.Combine(_dir, "cls.jsonl"), "--device", "cuda:x").Code, Is.EqualTo(2));
    }
}
