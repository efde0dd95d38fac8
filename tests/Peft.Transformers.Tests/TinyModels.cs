using Peft.Core.Random;
using Peft.Transformers;

namespace Peft.Transformers.Tests;

/// <summary>Tiny seeded configs of each architecture, small enough for exhaustive tests.</summary>
internal static class TinyModels
{
    public const string Gpt2Json = """
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50, "n_positions": 32, "n_embd": 16,
         "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0, "num_labels": 3}
        """;

    public const string LlamaJson = """
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 60, "hidden_size": 16, "intermediate_size": 24,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "max_position_embeddings": 64, "pad_token_id": 0, "num_labels": 3}
        """;

    public const string BertJson = """
        {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
         "attention_probs_dropout_prob": 0.0, "num_labels": 3}
        """;

    public static readonly string RobertaJson = BertJson.Replace("\"bert\"", "\"roberta\"").Replace("BertForMaskedLM", "RobertaForMaskedLM")
        .Replace("\"num_labels\": 3", "\"num_labels\": 3, \"pad_token_id\": 1");

    public static PreTrainedModel Create(string json, ModelTask? task = null, ulong seed = 1)
    {
        Generator.Default.ManualSeed(seed);
        return AutoModel.Create(HfConfig.FromJson(json), task);
    }

    public static Tensor Ids(int[,] ids)
    {
        var flat = new long[ids.Length];
        int k = 0;
        foreach (var v in ids) flat[k++] = v;
        return Tensor.FromArray(flat, [ids.GetLength(0), ids.GetLength(1)]);
    }

    public static string TempDir() => Directory.CreateTempSubdirectory("peft-tf-").FullName;
}
