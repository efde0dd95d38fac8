using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Transformers;
using Peft.Transformers.T5;

namespace Peft.Cli.Commands;

/// <summary><c>peft generate</c> (text continuation) and <c>peft forward --json</c> (last-position logits for interop checks).</summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder with tokenizer files", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "optional adapter folder" };
        var prompt = new Option<string>("--prompt") { Description = "text to continue", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 20 };
        var temperature = new Option<double>("--temperature") { Description = "sample with this temperature (0 = greedy)", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var cmd = new Command("generate", "Generate text with a model (and optionally an adapter)");
        foreach (var o in new Option[] { model, adapter, prompt, maxNew, temperature, topK, topP, seed }) cmd.Options.Add(o);
        cmd.SetAction(r => ModelLoading.ReportingBadInput(stderr, () =>
        {
            var folder = r.GetValue(model)!;
            var tok = AutoTokenizer.FromPretrained(folder);
            var (m, peft) = ModelLoading.Load(folder, r.GetValue(adapter));
            using (peft == null ? m : null)
            using (peft)
            {
                double t = r.GetValue(temperature);
                var eos = tok.EosTokenId is int e ? new[] { e } : Array.Empty<int>();
                var options = new GenerationOptions
                {
                    MaxNewTokens = r.GetValue(maxNew), DoSample = t > 0, Temperature = t > 0 ? t : 1, TopK = r.GetValue(topK), TopP = r.GetValue(topP),
                    EosTokenIds = eos, Generator = new Generator(r.GetValue(seed)),
                };
                var ids = tok.Encode(r.GetValue(prompt)!).Select(i => (long)i).ToArray();
                using var input = Tensor.FromArray(ids, [1, ids.Length]);
                var result = m is T5ForConditionalGeneration t5
                    ? Seq2SeqGeneration.Generate(t5, input, options: options with { EosTokenIds = [t5.Config.EosTokenId] })
                    : peft != null ? peft.Generate(input, options) : TextGeneration.Generate(m, input, options);
                stdout.WriteLine(tok.Decode(result[0], skipSpecialTokens: true));
            }
            return 0;
        }));
        return cmd;
    }

    public static Command CreateForward(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "optional adapter folder" };
        var ids = new Option<string>("--input-ids") { Description = "comma-separated token ids, e.g. 15496,995", Required = true };
        var json = new Option<bool>("--json") { Description = "print the logits of the last position as a JSON array" };
        var cmd = new Command("forward", "Run one forward pass and print the last position's logits (for interop checks)");
        foreach (var o in new Option[] { model, adapter, ids, json }) cmd.Options.Add(o);
        cmd.SetAction(r => ModelLoading.ReportingBadInput(stderr, () =>
        {
            var tokens = ModelLoading.ParseIds(r.GetValue(ids)!);
            var (m, peft) = ModelLoading.Load(r.GetValue(model)!, r.GetValue(adapter));
            using (peft == null ? m : null)
            using (peft)
            using (Autograd.NoGrad())
            {
                using var input = Tensor.FromArray(tokens, [1, tokens.Length]);
                using var logits = (peft != null ? peft.Forward(input) : m.Forward(input)).Logits;   // prompt adapters act in PeftModel.Forward
                using var last = logits.Rank == 3 ? logits.Select(1, logits.Size(1) - 1).Select(0, 0) : logits.Select(0, 0);
                var values = last.ToFloatArray();
                if (r.GetValue(json)) stdout.WriteLine(new JsonArray(values.Select(v => (JsonNode)JsonValue.Create(v)).ToArray()).ToJsonString());
                else stdout.WriteLine(string.Join(" ", values.Select(v => v.ToString("G6", CultureInfo.InvariantCulture))));
            }
            return 0;
        }));
        return cmd;
    }
}
