using System.CommandLine;
using System.Globalization;
using Peft.Core;
using Peft.Core.SafeTensors;

namespace Peft.Cli.Commands;

/// <summary><c>peft inspect &lt;file-or-folder&gt;</c>: lists tensors (name, dtype, shape, bytes) and metadata; with
/// <c>--peft &lt;adapter_config.json&gt;</c> on a model folder, prints PEFT's print_trainable_parameters line for that
/// model and adapter config.</summary>
internal static class InspectCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var path = new Argument<string>("path") { Description = "a .safetensors file, a shard index (.json), or a folder holding model.safetensors / adapter_model.safetensors" };
        var peft = new Option<string>("--peft") { Description = "an adapter_config.json (or adapter folder): print the trainable-parameter line PEFT would print for this model folder" };
        var cmd = new Command("inspect", "List the tensors and metadata of a safetensors file or checkpoint folder");
        cmd.Arguments.Add(path);
        cmd.Options.Add(peft);
        cmd.SetAction(result => result.GetValue(peft) is { } config
            ? ModelLoading.ReportingBadInput(stderr, () => TrainableLine(result.GetValue(path)!, config, stdout))
            : Run(result.GetValue(path)!, stdout, stderr));
        return cmd;
    }

    /// <summary>
    /// Builds the model from the folder's config.json alone (weights are not read, so a folder with only config.json
    /// works), applies the adapter config as <c>get_peft_model</c> would, and prints the line PEFT's
    /// print_trainable_parameters prints. The build is shape-only (meta tensors: a 70B config is counted in
    /// milliseconds without its memory); an adapter whose initialisation reads the weights (PiSSA, OLoRA, LoftQ)
    /// is counted on a real, randomly initialised build instead.
    /// </summary>
    private static int TrainableLine(string modelFolder, string adapterConfig, TextWriter stdout)
    {
        if (!Directory.Exists(modelFolder)) throw new DirectoryNotFoundException($"--peft needs a model folder, not '{modelFolder}'");
        var config = PeftConfig.Load(adapterConfig);
        config.InferenceMode = false;   // counted as get_peft_model creates it: trainable
        var hf = Peft.Transformers.HfConfig.Load(modelFolder);
        using var scope = Tensor.NewScope();
        PeftModel Build() => PeftModel.Create(Peft.Transformers.AutoModel.Create(hf, ModelLoading.TaskOf(config.TaskType)), config);
        string line;
        try
        {
            using (Tensor.DefaultDevice(Device.Meta))
            using (var meta = Build())
                line = meta.TrainableParametersLine();
        }
        catch (MetaTensorException)
        {
            using var real = Build();
            line = real.TrainableParametersLine();
        }
        stdout.WriteLine(line);
        return 0;
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
