using Peft.TestSupport;
using Peft.Transformers;

namespace Peft.Transformers.Tests;

/// <summary>Tiny seeded configs of each architecture, small enough for exhaustive tests.</summary>
internal static class TinyModels
{
    public const string Gpt2Json = TinyConfigs.Gpt2;

    public const string LlamaJson = TinyConfigs.Llama;

    public const string BertJson = TinyConfigs.BertMaskedLm;

    public static readonly string RobertaJson = BertJson.Replace("\"bert\"", "\"roberta\"").Replace("BertForMaskedLM", "RobertaForMaskedLM")
        .Replace("\"num_labels\": 3", "\"num_labels\": 3, \"pad_token_id\": 1");

    public static PreTrainedModel Create(string json, ModelTask? task = null, ulong seed = 1) => TinyConfigs.Create(json, task, seed);

    public static Tensor Ids(int[,] ids)
    {
        var flat = new long[ids.Length];
        int k = 0;
        foreach (var v in ids) flat[k++] = v;
        return Tensor.FromArray(flat, [ids.GetLength(0), ids.GetLength(1)]);
    }

    public static string TempDir() => Directory.CreateTempSubdirectory("peft-tf-").FullName;
}
