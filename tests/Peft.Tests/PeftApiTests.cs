using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests;

[TestFixture]
public class PeftApiTests
{
    private string _dir = "";

    [SetUp] public void SetUp() => _dir = Directory.CreateTempSubdirectory("peft-api-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_dir, true);

    /// <summary>adapter_config.json as Python peft 0.13 wrote it for a GPT-2 LoRA (json.dumps(indent=2, sort_keys=True)),
    /// including fields this library does not model (they must survive a re-save) and nulls.</summary>
    private const string PythonWritten = """
        {
          "alpha_pattern": {},
          "auto_mapping": null,
          "base_model_name_or_path": "gpt2",
          "bias": "none",
          "fan_in_fan_out": true,
          "inference_mode": true,
          "init_lora_weights": true,
          "layer_replication": null,
          "layers_pattern": null,
          "layers_to_transform": null,
          "loftq_config": {},
          "lora_alpha": 32,
          "lora_dropout": 0.05,
          "megatron_config": null,
          "megatron_core": "megatron.core",
          "modules_to_save": null,
          "peft_type": "LORA",
          "r": 4,
          "rank_pattern": {},
          "revision": null,
          "target_modules": [
            "c_attn"
          ],
          "task_type": "CAUSAL_LM",
          "use_dora": false,
          "use_rslora": false
        }
        """;

    [Test]
    public void APythonWrittenConfigLoadsAndIsResavedByteForByte()
    {
        var text = PythonWritten.Replace("\r\n", "\n").TrimEnd('\n');
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), text);
        var cfg = (LoraConfig)PeftConfig.Load(_dir);
        Assert.That(cfg.R, Is.EqualTo(4));
        Assert.That(cfg.LoraAlpha, Is.EqualTo(32));
        Assert.That(cfg.LoraDropout, Is.EqualTo(0.05));
        Assert.That(cfg.TargetModules, Is.EqualTo(new[] { "c_attn" }));
        Assert.That(cfg.FanInFanOut);
        Assert.That(cfg.ToJsonString(), Is.EqualTo(text));
        Assert.That(cfg.Json["megatron_core"]!.GetValue<string>(), Is.EqualTo("megatron.core"), "unknown fields are kept");
    }

    [Test]
    public void ACSharpConfigIsWrittenAsPeftWritesIt()
    {
        var cfg = new LoraConfig { R = 16, LoraAlpha = 32, LoraDropout = 0.1, TargetModules = ["q_proj", "v_proj"], TaskType = "CAUSAL_LM" };
        var json = cfg.ToJsonString();
        Assert.That(json, Does.StartWith("{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,"));
        Assert.That(json, Does.Contain("\n  \"lora_alpha\": 32,\n  \"lora_bias\": false,\n  \"lora_dropout\": 0.1,"));
        Assert.That(json, Does.Contain("\"target_modules\": [\n    \"q_proj\",\n    \"v_proj\"\n  ],"));
        Assert.That(json, Does.EndWith("\"use_rslora\": false\n}"));
        Assert.That(PythonJson.Dumps(PythonJson.Float(1e-05)), Is.EqualTo("1e-05"));
        Assert.That(PythonJson.Dumps(PythonJson.Float(16)), Is.EqualTo("16.0"));
    }

    [Test]
    public void FanInFanOutIsCorrectedToTheLayersAsPeftDoes()
    {
        using (var gpt2 = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { TargetModules = ["c_attn"] }))
            Assert.That(((LoraConfig)gpt2.PeftConfigs["default"]).FanInFanOut, Is.True, "GPT-2's Conv1D stores [in, out]");
        using var llama = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { TargetModules = ["q_proj"], FanInFanOut = true });
        Assert.That(((LoraConfig)llama.PeftConfigs["default"]).FanInFanOut, Is.False);
    }

    [Test]
    public void ConfigsThatCannotWorkAreRejectedNamingTheProblem()
    {
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), "{\"r\": 8}");
        Assert.That(Assert.Throws<PeftConfigException>(() => PeftConfig.Load(_dir))!.Message, Does.Contain("peft_type"));
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": 0}");
        Assert.That(Assert.Throws<PeftConfigException>(() => PeftConfig.Load(_dir))!.Message, Does.Contain("r must be positive"));
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": \"eight\"}");
        Assert.That(Assert.Throws<PeftConfigException>(() => PeftConfig.Load(_dir))!.Message, Does.Contain("'r'"));
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), "{\"peft_type\": \"XLORA\"}");
        Assert.That(Assert.Throws<PeftConfigException>(() => PeftConfig.Load(_dir))!.Message, Does.Contain("XLORA"));
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), "{\"peft_type\": \"LORA\"}");
        Assert.That(((LoraConfig)PeftConfig.Load(_dir)).R, Is.EqualTo(8), "only peft_type is required; the rest default");
    }

    [Test]
    public void Gpt2SmallWithRank8OnCAttnPrintsPeftsPublishedLine()
    {
        // PEFT's README/quicktour figure for GPT-2 (124M) with r=8 on c_attn.
        var config = HfConfig.FromJson("""{"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}""");
        using var peft = PeftModel.Create(AutoModel.Create(config), new LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
        var sw = new StringWriter();
        peft.PrintTrainableParameters(sw);
        Assert.That(sw.ToString().TrimEnd(), Is.EqualTo("trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364"));
    }

    [Test]
    public void PatternsOverrideRankAndAlphaPerModule()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig
        {
            R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"],
            RankPattern = new() { ["v_proj"] = 2 }, AlphaPattern = new() { [@"layers\.1\.self_attn\.q_proj"] = 3 },
        });
        LoraLayer L(string path) => (LoraLayer)peft.Model.GetSubmodule(path);
        Assert.That(L("model.layers.0.self_attn.v_proj").Rank("default"), Is.EqualTo(2));
        Assert.That(L("model.layers.0.self_attn.q_proj").Scaling("default"), Is.EqualTo(2.0));
        Assert.That(L("model.layers.1.self_attn.q_proj").Scaling("default"), Is.EqualTo(0.75));
        using var rs = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj"], UseRslora = true });
        Assert.That(((LoraLayer)rs.Model.GetSubmodule("model.layers.0.self_attn.q_proj")).Scaling("default"), Is.EqualTo(4.0), "rsLoRA: alpha/√r");
    }

    [Test]
    public void DefaultAndGaussianInitsFollowPeft()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 4, TargetModules = ["q_proj"] });
        var sd = peft.StateDict();
        var a = sd["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"].ToFloatArray();
        Assert.That(a, Has.All.InRange(-1 / Math.Sqrt(16), 1 / Math.Sqrt(16)), "kaiming_uniform(a=√5) = U(±1/√in)");
        Assert.That(sd["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"].ToFloatArray(), Has.All.EqualTo(0f));
        using var big = PeftModel.Create(Cases.Create(Cases.Gpt2.Replace("\"n_embd\": 16", "\"n_embd\": 256")), new LoraConfig { R = 8, TargetModules = ["c_fc"], InitLoraWeights = "gaussian" });
        var g = big.StateDict()["base_model.model.transformer.h.0.mlp.c_fc.lora_A.default.weight"].ToFloatArray();
        double std = Math.Sqrt(g.Select(v => (double)v * v).Average());
        Assert.That(std, Is.EqualTo(1.0 / 8).Within(0.01), "gaussian: A ~ N(0, 1/r)");
    }

    [Test]
    public void SeveralAdaptersAddUpAndCanBeSavedLoadedAndDeleted()
    {
        using var scope = Tensor.NewScope();
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12 }, [1, 4]);
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn"], InitLoraWeights = "false" });
        peft.Eval();
        peft.AddAdapter("other", new LoraConfig { R = 2, TargetModules = ["c_fc"], InitLoraWeights = "false" });
        Assert.That(peft.ActiveAdapters, Is.EqualTo(new[] { "default" }), "a new adapter is not activated");
        Assert.That(peft.NamedParameters().Where(p => p.Name.Contains(".other.")).All(p => !p.Parameter.RequiresGrad));
        float[] Out() { using var _ = Autograd.NoGrad(); return peft.Forward(ids).Logits.ToFloatArray(); }
        var one = Out();
        peft.SetAdapter("other");
        var two = Out();
        peft.SetAdapter("default", "other");
        var both = Out();
        Assert.That(both, Is.Not.EqualTo(one).And.Not.EqualTo(two));
        Assert.That(peft.NamedParameters().Where(p => p.Name.Contains(".other.")).All(p => p.Parameter.RequiresGrad));

        peft.SavePretrained(_dir);
        Assert.That(File.Exists(Path.Combine(_dir, "adapter_model.safetensors")) && File.Exists(Path.Combine(_dir, "other", "adapter_model.safetensors")));
        using (var loaded = PeftModel.FromPretrained(Cases.Create(Cases.Gpt2), _dir))
        {
            loaded.LoadAdapter(Path.Combine(_dir, "other"), "other");
            loaded.SetAdapter("default", "other");
            loaded.Eval();
            using var _ = Autograd.NoGrad();
            Assert.That(loaded.Forward(ids).Logits.ToFloatArray(), Is.EqualTo(both));
        }

        Assert.Throws<KeyNotFoundException>(() => peft.DeleteAdapter("nope"));
        peft.MergeAdapter(["other"]);
        Assert.Throws<InvalidOperationException>(() => peft.DeleteAdapter("other"));
        peft.UnmergeAdapter();
        peft.DeleteAdapter("other");
        Assert.That(peft.NamedParameters().Any(p => p.Name.Contains(".other.")), Is.False);
        Assert.That(peft.ActiveAdapters, Is.EqualTo(new[] { "default" }));
        Assert.That(Out(), Is.EqualTo(one).Within(1e-6));
    }

    [Test]
    public void ASecondAdapterOnAnAlreadyAdaptedLayerIsAddedToThatLayer()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 4, TargetModules = ["q_proj"] });
        peft.AddAdapter("second", new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        var layer = (LoraLayer)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj");
        Assert.That(layer.Adapters, Is.EquivalentTo(new[] { "default", "second" }));
        Assert.That(peft.Model.NamedModules().Count(m => m.Module is LoraLayer), Is.EqualTo(2), "no LoRA layer nested inside another");
    }

    [Test]
    public void AConfigThatTargetsNothingListsLayersThatExist()
    {
        var ex = Assert.Throws<ArgumentException>(() => PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { TargetModules = ["q_proj"] }));
        Assert.That(ex!.Message, Does.Contain("q_proj").And.Contain("transformer.h.0.attn.c_attn"));
    }

    [Test]
    public void SafeMergeRefusesNaNAndLeavesTheBaseIntact()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn"], InitLoraWeights = "false" });
        var key = "base_model.model.transformer.h.0.attn.c_attn.base_layer.weight";
        var before = peft.StateDict()[key].ToFloatArray();
        using (Autograd.NoGrad())
        {
            var b = peft.StateDict()["base_model.model.transformer.h.0.attn.c_attn.lora_B.default.weight"];
            b.RequiresGrad = false;
            b.Narrow(0, 0, 1).FillInPlace(double.NaN);
        }
        var ex = Assert.Throws<InvalidOperationException>(() => peft.MergeAdapter(safeMerge: true));
        Assert.That(ex!.Message, Does.Contain("NaN"));
        Assert.That(peft.StateDict()[key].ToFloatArray(), Is.EqualTo(before));
    }

    [Test]
    public void AnAdapterForADifferentBaseModelIsRejectedNamingTheTensor()
    {
        using (var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn"] })) peft.SavePretrained(_dir);
        var wider = Cases.Gpt2.Replace("\"n_embd\": 16", "\"n_embd\": 32");
        var ex = Assert.Throws<AdapterLoadException>(() => PeftModel.FromPretrained(Cases.Create(wider), _dir).Dispose());
        Assert.That(ex!.Message, Does.Contain("transformer.h.0.attn.c_attn.lora_A.weight").And.Contain("[4, 32]").And.Contain("[4, 16]"));
        var deeper = Cases.Gpt2.Replace("\"n_layer\": 2", "\"n_layer\": 3");
        var missing = Assert.Throws<AdapterLoadException>(() => PeftModel.FromPretrained(Cases.Create(deeper), _dir).Dispose());
        Assert.That(missing!.MissingKeys, Does.Contain("base_model.model.transformer.h.2.attn.c_attn.lora_A.weight"));
    }

    [Test]
    public void SequenceClassificationTrainsAndSavesTheHeadUnderItsOriginalKeys()
    {
        using (var peft = PeftModel.Create(Cases.Create(Cases.Bert, ModelTask.SequenceClassification), new LoraConfig { R = 4, TargetModules = ["query"], TaskType = "SEQ_CLS" }))
        {
            Assert.That(peft.PeftConfigs["default"].ModulesToSave, Is.EquivalentTo(new[] { "classifier", "score" }));
            Assert.That(peft.NamedParameters().Single(p => p.Name.EndsWith("classifier.modules_to_save.default.weight")).Parameter.RequiresGrad);
            Assert.That(peft.NamedParameters().Single(p => p.Name.EndsWith("classifier.original_module.weight")).Parameter.RequiresGrad, Is.False);
            peft.SavePretrained(_dir);
        }
        using var st = SafeTensorsFile.Open(Path.Combine(_dir, "adapter_model.safetensors"));
        Assert.That(st.Contains("base_model.model.classifier.weight") && st.Contains("base_model.model.classifier.bias"));
        Assert.That(st.Tensors.Select(t => t.Name), Has.None.Contains("original_module"));
    }

    [Test]
    public void UnloadGivesBackThePlainModelWithTheTrainedHead()
    {
        using var scope = Tensor.NewScope();
        var peft = PeftModel.Create(Cases.Create(Cases.Bert, ModelTask.SequenceClassification), new LoraConfig { R = 4, TargetModules = ["query"], TaskType = "SEQ_CLS", InitLoraWeights = "false" });
        var head = peft.StateDict()["base_model.model.classifier.modules_to_save.default.weight"].ToFloatArray();
        using var model = peft.Unload();
        peft.Dispose();
        Assert.That(model.NamedModules().Any(m => m.Module is LoraLayer or ModulesToSaveWrapper), Is.False);
        Assert.That(model.StateDict()["classifier.weight"].ToFloatArray(), Is.EqualTo(head));
        Assert.That(model.StateDict().Keys, Does.Contain("bert.encoder.layer.0.attention.self.query.weight"));
    }
}

[TestFixture]
public class FeatureExtractionPeftTests
{
    [Test]
    public void LoraOnATrunkForFeatureExtractionChangesTheHiddenStatesOnly()
    {
        using var scope = Tensor.NewScope();
        Peft.Core.Random.Generator.Default.ManualSeed(1);
        var trunk = Peft.Transformers.AutoModel.Create(Peft.Transformers.HfConfig.FromJson(Cases.Bert), Peft.Transformers.ModelTask.FeatureExtraction);
        trunk.Eval();
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12 }, [1, 4]);
        float[] before;
        using (Autograd.NoGrad()) before = trunk.Forward(ids).Logits.ToFloatArray();
        using var peft = PeftModel.Create(trunk, new LoraConfig { R = 2, TargetModules = ["query", "value"], TaskType = "FEATURE_EXTRACTION", InitLoraWeights = "false" });
        using (Autograd.NoGrad())
        {
            Assert.That(peft.Forward(ids).Logits.ToFloatArray(), Is.Not.EqualTo(before));
            using (peft.DisableAdapter()) Assert.That(peft.Forward(ids).Logits.ToFloatArray(), Is.EqualTo(before));
        }
        Assert.That(peft.PeftConfigs["default"].ModulesToSave, Is.Null, "no head is added for feature extraction");
    }
}
