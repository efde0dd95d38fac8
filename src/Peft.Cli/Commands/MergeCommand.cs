using System.CommandLine;

namespace Peft.Cli.Commands;

/// <summary><c>peft merge --model &lt;folder&gt; --adapter &lt;dir&gt; --output &lt;folder&gt;</c>: merge_and_unload into a plain HF model folder.</summary>
internal static class MergeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "adapter folder (adapter_config.json + adapter_model.safetensors)", Required = true };
        var output = new Option<string>("--output") { Description = "folder for the merged model", Required = true };
        var cmd = new Command("merge", "Merge an adapter into its base model and save a plain Hugging Face model folder");
        cmd.Options.Add(model);
        cmd.Options.Add(adapter);
        cmd.Options.Add(output);
        cmd.SetAction(r => ModelLoading.ReportingBadInput(stderr, () =>
        {
            string src = r.GetValue(model)!, dst = r.GetValue(output)!;
            var (_, peft) = ModelLoading.Load(src, r.GetValue(adapter));
            using (peft)
            using (var merged = peft!.MergeAndUnload(safeMerge: true))
            {
                merged.SavePretrained(dst);
            }
            // The tokenizer does not change: copy its files so the merged folder is complete.
            foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
                if (File.Exists(Path.Combine(src, f))) File.Copy(Path.Combine(src, f), Path.Combine(dst, f), overwrite: true);
            stdout.WriteLine($"merged model written to {dst}");
            return 0;
        }));
        return cmd;
    }
}
