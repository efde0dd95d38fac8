using Peft.Core.Random;
using Peft.Transformers;

namespace Peft.TestSupport;

/// <summary>Tiny configs of each architecture (16 wide, 2 layers), shared by the model and the PEFT tests, and the
/// seeded way to build them.</summary>
internal static class TinyConfigs
{
    public const string Gpt2 = """
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50, "n_positions": 32, "n_embd": 16,
         "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0, "num_labels": 3}
        """;

    /// <summary>LLaMA with grouped-query attention (4 heads, 2 key/value heads).</summary>
    public const string Llama = """
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 60, "hidden_size": 16, "intermediate_size": 24,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "max_position_embeddings": 64, "pad_token_id": 0, "num_labels": 3}
        """;

    public const string BertMaskedLm = """
        {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
         "attention_probs_dropout_prob": 0.0, "num_labels": 3}
        """;

    /// <summary>T5 with relu feed-forward and untied heads (2 layers each side).</summary>
    public const string T5 = """
        {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": 24, "d_model": 16, "d_kv": 4, "d_ff": 32,
         "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8, "dropout_rate": 0.0, "decoder_start_token_id": 0,
         "pad_token_id": 0, "eos_token_id": 1, "feed_forward_proj": "relu", "tie_word_embeddings": false}
        """;

    /// <summary>A model for <paramref name="json"/>, its random init seeded.</summary>
    public static PreTrainedModel Create(string json, ModelTask? task = null, ulong seed = 1)
    {
        Generator.Default.ManualSeed(seed);
        return AutoModel.Create(HfConfig.FromJson(json), task);
    }
}
