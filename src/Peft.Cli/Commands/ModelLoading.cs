using Peft.Transformers;

namespace Peft.Cli.Commands;

/// <summary>Loading a model folder plus an optional adapter for the CLI verbs, with the task the adapter was made for.</summary>
internal static class ModelLoading
{
    /// <summary>PEFT's task_type names mapped to the model heads.</summary>
    public static ModelTask? TaskOf(string? taskType) => taskType switch
    {
        null => null,
        "CAUSAL_LM" => ModelTask.CausalLM,
        "SEQ_CLS" => ModelTask.SequenceClassification,
        "TOKEN_CLS" => ModelTask.TokenClassification,
        "SEQ_2_SEQ_LM" => ModelTask.Seq2SeqLM,
        "FEATURE_EXTRACTION" => ModelTask.FeatureExtraction,
        _ => throw new PeftConfigException("adapter_config.json", $"task_type '{taskType}' is not supported"),
    };

    /// <summary>The base model (with the adapter's task head) and, when given, the adapter on top (frozen).</summary>
    public static (PreTrainedModel Model, PeftModel? Peft) Load(string modelFolder, string? adapterFolder)
    {
        if (!Directory.Exists(modelFolder)) throw new DirectoryNotFoundException($"no model folder at '{modelFolder}'");
        if (adapterFolder == null) return (AutoModel.FromPretrained(modelFolder), null);
        if (!Directory.Exists(adapterFolder)) throw new DirectoryNotFoundException($"no adapter folder at '{adapterFolder}'");
        var task = TaskOf(PeftConfig.Load(adapterFolder).TaskType);
        var model = AutoModel.FromPretrained(modelFolder, task);
        var peft = PeftModel.FromPretrained(model, adapterFolder);
        peft.Eval();
        return (model, peft);
    }

    /// <summary>Parses "1,2,3" into token ids.</summary>
    public static long[] ParseIds(string text)
    {
        try
        {
            var ids = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
            return ids.Length > 0 ? ids : throw new FormatException("no ids");
        }
        catch (FormatException) { throw new ArgumentException($"--input-ids must be comma-separated integers, got '{text}'"); }
        catch (OverflowException) { throw new ArgumentException($"--input-ids must be comma-separated integers, got '{text}'"); }
    }

    /// <summary>Runs a verb's body: bad input becomes one <c>error:</c> line on stderr and exit code 2; anything else
    /// propagates (a bug, with its stack trace).</summary>
    public static int ReportingBadInput(TextWriter stderr, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (IsBadInput(e))
        {
            stderr.WriteLine($"error: {e.Message.Split('\n')[0]}");
            return Program.BadInput;
        }
    }

    /// <summary>True for exceptions that mean "bad input" (exit code 2, one line) rather than a bug.</summary>
    private static bool IsBadInput(Exception e) => e is IOException or UnauthorizedAccessException or ArgumentException or ConfigException
        or PeftConfigException or AdapterLoadException or Peft.Nn.StateDictException or Peft.Core.SafeTensors.SafeTensorsFormatException
        or NotSupportedException or KeyNotFoundException or InvalidOperationException;
}
