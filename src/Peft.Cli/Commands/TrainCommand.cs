using System.CommandLine;

namespace Peft.Cli.Commands;

/// <summary>
/// <c>peft train</c>: the main job. Training lands with the PEFT-core and CLI issues; until then the command says so
/// plainly and exits with a distinct code instead of pretending to train.
/// </summary>
internal static class TrainCommand
{
    /// <summary>Exit code meaning "this verb is not available in this build yet".</summary>
    public const int NotYet = 3;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command("train", "Fine-tune a model with a PEFT method (not available yet in this build)");
        cmd.Options.Add(new Option<string>("--model") { Description = "Hugging Face model folder (default: a built-in demo model)" });
        cmd.SetAction(_ =>
        {
            stderr.WriteLine("peft train: not yet — training arrives with the PEFT-core issue. Available now: peft inspect <file-or-folder>.");
            return NotYet;
        });
        return cmd;
    }
}
