using Peft.Transformers;

namespace Peft.Tests;

/// <summary>What the CLI tests share: running the <c>peft</c> command in-process and a tiny GPT-2 folder with the real
/// GPT-2 tokenizer files.</summary>
internal static class CliHarness
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        return (Peft.Cli.Program.Run(args, o, e), o.ToString(), e.ToString());
    }

    /// <summary>Saves a 2-layer, 32-wide GPT-2 with GPT-2's vocabulary (seeded) into <paramref name="folder"/>.</summary>
    public static void SaveTinyGpt2(string folder)
    {
        var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50257, "n_positions": 64}""");
        Peft.Core.Random.Generator.Default.ManualSeed(5);
        using (var m = AutoModel.Create(config)) m.SavePretrained(folder);
        Peft.TestSupport.Gpt2Vocabulary.CopyInto(folder);
    }
}
