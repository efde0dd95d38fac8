using System.CommandLine;
using System.Globalization;
using Peft.Core;
using Peft.Core.SafeTensors;

namespace Peft.Cli.Commands;

/// <summary><c>peft inspect &lt;file-or-folder&gt;</c>: lists tensors (name, dtype, shape, bytes) and metadata.</summary>
internal static class InspectCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var path = new Argument<string>("path") { Description = "a .safetensors file, a shard index (.json), or a folder holding model.safetensors / adapter_model.safetensors" };
        var cmd = new Command("inspect", "List the tensors and metadata of a safetensors file or checkpoint folder");
        cmd.Arguments.Add(path);
        cmd.SetAction(result => Run(result.GetValue(path)!, stdout, stderr));
        return cmd;
    }

    internal static int Run(string path, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            if (Directory.Exists(path) && !File.Exists(Path.Combine(path, SafeTensorsCheckpoint.IndexFileName))
                && !File.Exists(Path.Combine(path, "model.safetensors")) && File.Exists(Path.Combine(path, "adapter_model.safetensors")))
                path = Path.Combine(path, "adapter_model.safetensors");
            if (!Directory.Exists(path) && !File.Exists(path)) throw new FileNotFoundException($"no such file or folder: '{path}'");
            if (File.Exists(path) && !path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            {
                using var file = SafeTensorsFile.Open(path);
                Print(stdout, path, file.Tensors, file.Metadata);
            }
            else
            {
                using var ckpt = SafeTensorsCheckpoint.Open(path);
                var infos = ckpt.Names.Select(ckpt.Info).ToList();
                Print(stdout, path, infos, new Dictionary<string, string>());
                stdout.WriteLine($"shards: {string.Join(", ", ckpt.Files.Select(Path.GetFileName))}");
            }
            return 0;
        }
        catch (Exception e) when (e is SafeTensorsFormatException or FileNotFoundException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return Program.BadInput;
        }
    }

    private static void Print(TextWriter o, string path, IReadOnlyList<SafeTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        var inv = CultureInfo.InvariantCulture;
        int nameWidth = Math.Max(4, tensors.Count == 0 ? 4 : tensors.Max(t => t.Name.Length));
        o.WriteLine(path);
        o.WriteLine($"{"name".PadRight(nameWidth)}  {"dtype",-7} {"shape",-20} {"bytes",14}");
        foreach (var t in tensors)
            o.WriteLine($"{t.Name.PadRight(nameWidth)}  {t.DTypeName,-7} {Shapes.Format(t.Shape),-20} {t.ByteLength.ToString("N0", inv),14}");
        long total = tensors.Sum(t => t.ByteLength), elements = tensors.Sum(t => t.NumEl);
        o.WriteLine($"{tensors.Count} tensors, {elements.ToString("N0", inv)} elements, {total.ToString("N0", inv)} bytes");
        foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) o.WriteLine($"metadata {k} = {v}");
    }
}
