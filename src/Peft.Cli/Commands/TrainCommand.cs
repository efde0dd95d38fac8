using System.CommandLine;
using Peft.Cli.Demo;

namespace Peft.Cli.Commands;

/// <summary>
/// <c>peft train</c>: the main job. Without <c>--model</c> it runs the built-in demonstration (a model and data set that
/// ship with the program). Training your own model folder on your own data arrives with the CLI issue; until then that
/// form says so plainly and exits with a distinct code instead of pretending to train.
/// </summary>
internal static class TrainCommand
{
    /// <summary>Exit code meaning "this form of the verb is not available in this build yet".</summary>
    public const int NotYet = 3;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (default: the built-in demo model)" };
        var output = new Option<string>("--output") { Description = "where the demo writes its model and adapter", DefaultValueFactory = _ => "peft-demo" };
        var epochs = new Option<int>("--epochs") { Description = "training epochs of the demo", DefaultValueFactory = _ => 30 };
        var cmd = new Command("train", "Fine-tune with LoRA (without --model: a complete built-in demonstration)");
        cmd.Options.Add(model);
        cmd.Options.Add(output);
        cmd.Options.Add(epochs);
        cmd.SetAction(result =>
        {
            if (result.GetValue(model) is { } folder)
            {
                stderr.WriteLine($"peft train --model {folder}: not yet — training your own model folder and data arrives with the CLI issue; run `peft train` alone for the built-in demo.");
                return NotYet;
            }
            int n = result.GetValue(epochs);
            if (n <= 0) { stderr.WriteLine("error: --epochs must be positive"); return Program.BadInput; }
            return ComplaintDemo.Run(result.GetValue(output)!, n, stdout);
        });
        return cmd;
    }
}
