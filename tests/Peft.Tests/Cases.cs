using Peft.Core.Random;
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

/// <summary>One row of the invariant matrix: a model, a LoRA config and inputs.</summary>
public sealed record PeftCase(string Name, Func<PreTrainedModel> Model, Func<LoraConfig> Config, Func<Tensor> Input, Func<Tensor> Labels)
{
    public override string ToString() => Name;
}

internal static class Cases
{
    public const string Gpt2 = """
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50, "n_positions": 32, "n_embd": 16,
         "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0, "num_labels": 3}
        """;

    public const string Llama = """
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 60, "hidden_size": 16, "intermediate_size": 24,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "num_labels": 3}
        """;

    public const string Bert = """
        {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
         "attention_probs_dropout_prob": 0.0, "num_labels": 3}
        """;

    public static PreTrainedModel Create(string json, ModelTask? task = null)
    {
        Generator.Default.ManualSeed(1);
        return AutoModel.Create(HfConfig.FromJson(json), task);
    }

    private static Tensor Ids() => Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]);

    private static LoraConfig Lora(string task, string[] targets, string init = "false", Action<LoraConfig>? more = null)
    {
        var c = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = targets, TaskType = task, InitLoraWeights = init };
        more?.Invoke(c);
        return c;
    }

    public static IEnumerable<PeftCase> All()
    {
        yield return new("gpt2_c_attn_conv1d", () => Create(Gpt2), () => Lora("CAUSAL_LM", ["c_attn"]), Ids, Ids);
        yield return new("gpt2_all_linear_rslora", () => Create(Gpt2), () => Lora("CAUSAL_LM", ["all-linear"], more: c => c.UseRslora = true), Ids, Ids);
        yield return new("gpt2_regex_layer1_mlp", () => Create(Gpt2), () =>
        {
            var c = Lora("CAUSAL_LM", ["c_fc"]);
            c.TargetModules = null;
            c.TargetModulesRegex = @".*\.1\.mlp\.c_(fc|proj)";
            return c;
        }, Ids, Ids);
        yield return new("llama_qv_gaussian_patterns", () => Create(Llama), () => Lora("CAUSAL_LM", ["q_proj", "v_proj"], "false", c =>
        {
            c.RankPattern = new() { ["v_proj"] = 2 };
            c.AlphaPattern = new() { [@"layers\.1\.self_attn\.q_proj"] = 3 };
        }), Ids, Ids);
        yield return new("llama_layers_to_transform_exclude", () => Create(Llama), () => Lora("CAUSAL_LM", ["q_proj", "k_proj", "v_proj", "o_proj"], more: c =>
        {
            c.LayersToTransform = [1];
            c.LayersPattern = ["layers"];
            c.ExcludeModules = ["k_proj"];
        }), Ids, Ids);
        yield return new("gpt2_dora_conv1d", () => Create(Gpt2), () => Lora("CAUSAL_LM", ["c_attn", "c_fc"], more: c => c.UseDora = true), Ids, Ids);
        yield return new("llama_dora_linear", () => Create(Llama), () => Lora("CAUSAL_LM", ["q_proj", "v_proj", "down_proj"], more: c => c.UseDora = true), Ids, Ids);
        yield return new("llama_embedding_and_q", () => Create(Llama), () => Lora("CAUSAL_LM", ["embed_tokens", "q_proj"]), Ids, Ids);
        yield return new("bert_seqcls_with_head", () => Create(Bert, ModelTask.SequenceClassification), () => Lora("SEQ_CLS", ["query", "value"]), Ids,
            () => Tensor.FromArray(new long[] { 2, 0 }));
        yield return new("mlp_lin0_bias_all", () => { Generator.Default.ManualSeed(1); return new Mlp(); }, () => Lora(null!, ["lin0"], more: c => c.Bias = "all"),
            () => Tensor.Randn([4, 10], 3), () => Tensor.FromArray(new long[] { 0, 1, 1, 0 }));
    }
}
