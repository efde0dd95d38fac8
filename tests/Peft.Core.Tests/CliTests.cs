using Peft.Core.SafeTensors;

namespace Peft.Core.Tests;

[TestFixture]
public class CliTests
{
    private string _dir = "";

    [SetUp] public void SetUp() => _dir = Directory.CreateTempSubdirectory("peft-cli-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Peft.Cli.Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Test]
    public void InspectListsNameDTypeShapeBytesAndMetadata()
    {
        var json = "{\"__metadata__\":{\"format\":\"pt\"},\"base_model.model.lora_A.weight\":{\"dtype\":\"BF16\",\"shape\":[8,768],\"data_offsets\":[0,12288]}}";
        var p = Path.Combine(_dir, "adapter_model.safetensors");
        File.WriteAllBytes(p, SafeTensorsTests.HandMade(json, new byte[12288]));
        var (code, stdout, _) = Run("inspect", p);
        Assert.That(code, Is.EqualTo(0));
        Assert.That(stdout, Does.Contain("base_model.model.lora_A.weight").And.Contain("BF16").And.Contain("[8, 768]").And.Contain("12,288"));
        Assert.That(stdout, Does.Contain("1 tensors, 6,144 elements, 12,288 bytes"));
        Assert.That(stdout, Does.Contain("metadata format = pt"));
        // A folder holding only an adapter resolves to its adapter_model.safetensors.
        Assert.That(Run("inspect", _dir).Out, Does.Contain("lora_A"));
    }

    [Test]
    public void InspectReadsAShardedFolder()
    {
        using var s = Tensor.NewScope();
        SafeTensorsWriter.Save(Path.Combine(_dir, "m-1.safetensors"), new Dictionary<string, Tensor> { ["x"] = Tensor.Ones([2, 2]) });
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), "{\"weight_map\":{\"x\":\"m-1.safetensors\"}}");
        var (code, stdout, _) = Run("inspect", _dir);
        Assert.That(code, Is.EqualTo(0));
        Assert.That(stdout, Does.Contain("shards: m-1.safetensors"));
    }

    [Test]
    public void InspectRejectsAGarbledFileWithExitCode2AndOneLine()
    {
        var p = Path.Combine(_dir, "bad.safetensors");
        File.WriteAllBytes(p, SafeTensorsTests.HandMade("{\"a\":{\"dty", new byte[4]));
        var (code, stdout, stderr) = Run("inspect", p);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith("error: ").And.Contain(p));
    }

    [Test]
    public void InspectOfAMissingPathIsExitCode2()
    {
        var (code, _, stderr) = Run("inspect", Path.Combine(_dir, "nope"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stderr, Does.Contain("no such file or folder"));
    }

    [Test]
    public void UnknownVerbsAndMissingArgumentsAreExitCode2()
    {
        Assert.That(Run("frobnicate").Code, Is.EqualTo(2));
        Assert.That(Run("inspect").Code, Is.EqualTo(2));
    }

    [Test]
    public void TrainWithoutAModelRunsTheBuiltInDemoAndProvesTheRoundTrip()
    {
        var (code, stdout, stderr) = Run("train", "--output", Path.Combine(_dir, "demo"), "--epochs", "20");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Match(@"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}"));
        var before = double.Parse(System.Text.RegularExpressions.Regex.Match(stdout, @"accuracy before training: (\d+)").Groups[1].Value);
        var after = double.Parse(System.Text.RegularExpressions.Regex.Match(stdout, @"accuracy after training: (\d+)").Groups[1].Value);
        Assert.That(after, Is.GreaterThan(before), "LoRA training improves held-out accuracy");
        // The stated figure of the end-to-end fine-tune: held-out accuracy reaches at least 75 % (12 of 16; the seeded
        // run gives 81 % on this project's machines, 50 % before training).
        Assert.That(after, Is.GreaterThanOrEqualTo(75), "held-out accuracy after LoRA fine-tuning");
        Assert.That(stdout, Does.Contain("reloaded adapter gives the same predictions: yes").And.Contain("merged model gives the same predictions: yes"));
        Assert.That(File.Exists(Path.Combine(_dir, "demo", "adapter", "adapter_config.json")));
        Assert.That(Run("inspect", Path.Combine(_dir, "demo", "adapter")).Out, Does.Contain("lora_A.weight"));
    }

    [Test]
    public void TrainOnAMissingFolderOrWithBadEpochsIsExitCode2()
    {
        var (code, _, stderr) = Run("train", "--model", "some-folder", "--data", "x.jsonl");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stderr, Does.StartWith("error: ").And.Contain("some-folder"));
        Assert.That(Run("train", "--epochs", "0").Code, Is.EqualTo(2));
    }
}
