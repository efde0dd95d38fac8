using Peft.Core.Random;
using Peft.TestSupport;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>PEFT's test MLP (Linear 10→20→2 with ReLU) as a model with a task head.</summary>
internal sealed class Mlp : PreTrainedModel
{
    public Mlp()
    {
        RegisterModule("lin0", new Linear(10, 20, generator: new Generator(11)));
        RegisterModule("lin1", new Linear(20, 2, generator: new Generator(12)));
    }

    public override string ModelType => "mlp";
    public override ModelTask Task => ModelTask.SequenceClassification;
    public override string ArchitectureName => "Mlp";
    public override string BaseModelPrefix => "mlp";
    public override int NumLayers => 0;

    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var h = Child<IUnaryModule>("lin0").Forward(input);
        using var a = h.Relu();
        var logits = Child<IUnaryModule>("lin1").Forward(a);
        return new ModelOutput(logits, labels == null ? null : logits.CrossEntropy(labels));
    }
}

/// <summary>One row of the invariant matrix: a model, a config and inputs. <c>Config(true)</c> gives a non-trivial
/// (randomly initialised) adapter, <c>Config(false)</c> the method's default init, which must leave the model unchanged.</summary>
public sealed record PeftCase(string Name, Func<PreTrainedModel> Model, Func<bool, TunerConfig> Config, Func<Tensor> Input, Func<Tensor> Labels)
{
    public override string ToString() => Name;
}

internal static class Cases
{
    public const string Gpt2 = TinyConfigs.Gpt2;

    public const string Llama = TinyConfigs.Llama;

    public static readonly string Bert = TinyConfigs.BertMaskedLm.Replace("BertForMaskedLM", "BertForSequenceClassification");

    public static PreTrainedModel Create(string json, ModelTask? task = null) => TinyConfigs.Create(json, task);

    private static Tensor Ids() => Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]);

    private static Func<bool, TunerConfig> Lora(string task, string[] targets, Action<LoraConfig>? more = null) => random =>
    {
        var c = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = targets, TaskType = task, InitLoraWeights = random ? "false" : "true" };
        more?.Invoke(c);
        return c;
    };

    private static Func<bool, TunerConfig> LoHa(string task, string[] targets, Action<LoHaConfig>? more = null) => random =>
    {
        var c = new LoHaConfig { R = 3, Alpha = 6, TargetModules = targets, TaskType = task, InitWeights = !random };
        more?.Invoke(c);
        return c;
    };

    private static Func<bool, TunerConfig> LoKr(string task, string[] targets, Action<LoKrConfig>? more = null) => random =>
    {
        var c = new LoKrConfig { R = 2, Alpha = 4, TargetModules = targets, TaskType = task, InitWeights = random ? "false" : "true" };
        more?.Invoke(c);
        return c;
    };

    private static Func<bool, TunerConfig> IA3(string task, string[] targets, string[] feedforward) => random =>
        new IA3Config { TargetModules = targets, FeedforwardModules = feedforward, TaskType = task, InitIa3Weights = !random };

    private static Func<bool, TunerConfig> Vera(string task, string[] targets, Action<VeraConfig>? more = null) => random =>
    {
        var c = new VeraConfig { R = 4, TargetModules = targets, TaskType = task, InitWeights = !random };
        more?.Invoke(c);
        return c;
    };

    private static Func<bool, TunerConfig> Oft(string task, string[] targets, Action<OftConfig>? more = null) => random =>
    {
        var c = new OftConfig { OftBlockSize = 4, TargetModules = targets, TaskType = task, InitWeights = !random };
        more?.Invoke(c);
        return c;
    };

    private static Func<bool, TunerConfig> AdaLora(string task, string[] targets) => random =>
        new AdaLoraConfig { InitR = 4, TargetR = 2, TotalStep = 20, LoraAlpha = 8, TargetModules = targets, TaskType = task, InitLoraWeights = !random };

    private static Func<bool, TunerConfig> Boft(string task, string[] targets, Action<BoftConfig>? more = null) => random =>
    {
        var c = new BoftConfig { BoftBlockSize = 4, TargetModules = targets, TaskType = task, InitWeights = !random };
        more?.Invoke(c);
        return c;
    };

    private static PreTrainedModel NewMlp()
    {
        Generator.Default.ManualSeed(1);
        return new Mlp();
    }

    private static Tensor MlpInput() => Tensor.Randn([4, 10], 3);

    private static Tensor MlpLabels() => Tensor.FromArray(new long[] { 0, 1, 1, 0 });

    private static Tensor SeqClsLabels() => Tensor.FromArray(new long[] { 2, 0 });

    public static IEnumerable<PeftCase> All()
    {
        yield return new("gpt2_c_attn_conv1d", () => Create(Gpt2), Lora("CAUSAL_LM", ["c_attn"]), Ids, Ids);
        yield return new("gpt2_all_linear_rslora", () => Create(Gpt2), Lora("CAUSAL_LM", ["all-linear"], more: c => c.UseRslora = true), Ids, Ids);
        yield return new("gpt2_regex_layer1_mlp", () => Create(Gpt2), Lora("CAUSAL_LM", ["c_fc"], c =>
        {
            c.TargetModules = null;
            c.TargetModulesRegex = @".*\.1\.mlp\.c_(fc|proj)";
        }), Ids, Ids);
        yield return new("llama_qv_gaussian_patterns", () => Create(Llama), Lora("CAUSAL_LM", ["q_proj", "v_proj"], c =>
        {
            c.RankPattern = new() { ["v_proj"] = 2 };
            c.AlphaPattern = new() { [@"layers\.1\.self_attn\.q_proj"] = 3 };
        }), Ids, Ids);
        yield return new("llama_layers_to_transform_exclude", () => Create(Llama), Lora("CAUSAL_LM", ["q_proj", "k_proj", "v_proj", "o_proj"], more: c =>
        {
            c.LayersToTransform = [1];
            c.LayersPattern = ["layers"];
            c.ExcludeModules = ["k_proj"];
        }), Ids, Ids);
        yield return new("gpt2_dora_conv1d", () => Create(Gpt2), Lora("CAUSAL_LM", ["c_attn", "c_fc"], more: c => c.UseDora = true), Ids, Ids);
        yield return new("llama_dora_linear", () => Create(Llama), Lora("CAUSAL_LM", ["q_proj", "v_proj", "down_proj"], more: c => c.UseDora = true), Ids, Ids);
        yield return new("llama_embedding_and_q", () => Create(Llama), Lora("CAUSAL_LM", ["embed_tokens", "q_proj"]), Ids, Ids);
        yield return new("bert_seqcls_with_head", () => Create(Bert, ModelTask.SequenceClassification), Lora("SEQ_CLS", ["query", "value"]), Ids, SeqClsLabels);
        yield return new("bert_seqcls_bias_all_keeps_head_original_frozen", () => Create(Bert, ModelTask.SequenceClassification),
            Lora("SEQ_CLS", ["query"], c => c.Bias = "all"), Ids, SeqClsLabels);
        yield return new("mlp_lin0_bias_all", NewMlp, Lora(null!, ["lin0"], more: c => c.Bias = "all"), MlpInput, MlpLabels);

        yield return new("loha_mlp", NewMlp, LoHa(null!, ["lin0", "lin1"]), MlpInput, MlpLabels);
        yield return new("loha_gpt2_conv1d_patterns", () => Create(Gpt2), LoHa("CAUSAL_LM", ["c_attn", "c_proj"], c =>
        {
            c.RankPattern = new() { ["c_proj"] = 2 };
            c.AlphaPattern = new() { [@"h\.1\.attn\.c_attn"] = 5 };
        }), Ids, Ids);
        yield return new("loha_llama_all_linear", () => Create(Llama), LoHa("CAUSAL_LM", ["all-linear"]), Ids, Ids);
        yield return new("loha_bert_seqcls", () => Create(Bert, ModelTask.SequenceClassification), LoHa("SEQ_CLS", ["query", "value"]), Ids, SeqClsLabels);
        yield return new("lokr_mlp", NewMlp, LoKr(null!, ["lin0", "lin1"]), MlpInput, MlpLabels);
        yield return new("lokr_gpt2_conv1d", () => Create(Gpt2), LoKr("CAUSAL_LM", ["c_attn", "c_fc"]), Ids, Ids);
        yield return new("lokr_llama_decompose_both_factor", () => Create(Llama), LoKr("CAUSAL_LM", ["q_proj", "v_proj", "down_proj"], c =>
        {
            c.R = 1;
            c.DecomposeBoth = true;
            c.DecomposeFactor = 4;
        }), Ids, Ids);
        yield return new("lokr_llama_lycoris_init", () => Create(Llama), LoKr("CAUSAL_LM", ["gate_proj", "o_proj"], c => { if (c.InitWeights == "true") c.InitWeights = "lycoris"; }), Ids, Ids);
        yield return new("ia3_mlp", NewMlp, IA3(null!, ["lin0", "lin1"], ["lin1"]), MlpInput, MlpLabels);
        yield return new("ia3_gpt2_conv1d", () => Create(Gpt2), IA3("CAUSAL_LM", ["c_attn", "mlp.c_proj"], ["mlp.c_proj"]), Ids, Ids);
        yield return new("ia3_llama", () => Create(Llama), IA3("CAUSAL_LM", ["k_proj", "v_proj", "down_proj"], ["down_proj"]), Ids, Ids);
        yield return new("ia3_bert_seqcls", () => Create(Bert, ModelTask.SequenceClassification), IA3("SEQ_CLS", ["key", "value", "output.dense"], ["output.dense"]), Ids, SeqClsLabels);
        yield return new("vera_mlp", NewMlp, Vera(null!, ["lin0", "lin1"]), MlpInput, MlpLabels);
        yield return new("vera_gpt2_conv1d_mixed_sizes", () => Create(Gpt2), Vera("CAUSAL_LM", ["c_attn", "c_proj"], c => c.ProjectionPrngKey = 7), Ids, Ids);
        yield return new("vera_llama_mixed_sizes", () => Create(Llama), Vera("CAUSAL_LM", ["q_proj", "v_proj", "up_proj"], c => c.VeraDropout = 0.0), Ids, Ids);
        yield return new("vera_bert_seqcls_bias", () => Create(Bert, ModelTask.SequenceClassification), Vera("SEQ_CLS", ["query", "value"], c => c.Bias = "vera_only"), Ids, SeqClsLabels);
        yield return new("oft_mlp_block5", NewMlp, Oft(null!, ["lin0", "lin1"], c => c.OftBlockSize = 5), MlpInput, MlpLabels);
        yield return new("oft_gpt2_conv1d", () => Create(Gpt2), Oft("CAUSAL_LM", ["c_attn", "c_fc"]), Ids, Ids);
        yield return new("oft_llama_exact_cayley_block_share", () => Create(Llama), Oft("CAUSAL_LM", ["q_proj", "down_proj"], c =>
        {
            c.UseCayleyNeumann = false;
            c.BlockShare = true;
        }), Ids, Ids);
        yield return new("oft_llama_coft_adjusted_block", () => Create(Llama), Oft("CAUSAL_LM", ["v_proj", "down_proj"], c =>
        {
            c.OftBlockSize = 5;   // 16 and 24 inputs: adjusted to 4 as PEFT does
            c.Coft = true;
            c.Eps = 0.5;
        }), Ids, Ids);
        yield return new("oft_bert_seqcls_r", () => Create(Bert, ModelTask.SequenceClassification), Oft("SEQ_CLS", ["query", "value"], c =>
        {
            c.R = 4;
            c.OftBlockSize = 0;
        }), Ids, SeqClsLabels);
        yield return new("adalora_mlp", NewMlp, AdaLora(null!, ["lin0", "lin1"]), MlpInput, MlpLabels);
        yield return new("adalora_gpt2_conv1d", () => Create(Gpt2), AdaLora("CAUSAL_LM", ["c_attn", "c_fc"]), Ids, Ids);
        yield return new("adalora_llama", () => Create(Llama), AdaLora("CAUSAL_LM", ["q_proj", "v_proj", "down_proj"]), Ids, Ids);
        yield return new("adalora_bert_seqcls", () => Create(Bert, ModelTask.SequenceClassification), AdaLora("SEQ_CLS", ["query", "value"]), Ids, SeqClsLabels);
        yield return new("boft_mlp_block5", NewMlp, Boft(null!, ["lin0", "lin1"], c => c.BoftBlockSize = 5), MlpInput, MlpLabels);
        yield return new("boft_gpt2_butterfly2", () => Create(Gpt2), Boft("CAUSAL_LM", ["c_attn", "c_fc"], c => c.BoftNButterflyFactor = 2), Ids, Ids);
        yield return new("boft_llama_blocknum_butterfly3", () => Create(Llama), Boft("CAUSAL_LM", ["q_proj", "down_proj"], c =>
        {
            c.BoftBlockSize = 0;
            c.BoftBlockNum = 4;
            c.BoftNButterflyFactor = 3;
        }), Ids, Ids);
        yield return new("boft_bert_seqcls_bias", () => Create(Bert, ModelTask.SequenceClassification), Boft("SEQ_CLS", ["query", "value"], c =>
        {
            c.BoftNButterflyFactor = 2;
            c.Bias = "boft_only";
        }), Ids, SeqClsLabels);
        yield return new("lokr_bert_seqcls", () => Create(Bert, ModelTask.SequenceClassification), LoKr("SEQ_CLS", ["query", "key", "intermediate.dense"]), Ids, SeqClsLabels);
    }
}
