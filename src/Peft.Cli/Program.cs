using System.CommandLine;
using Peft.Cli.Commands;

namespace Peft.Cli;

/// <summary>Entry point of the <c>peft</c> command.</summary>
public static class Program
{
    /// <summary>Exit code for bad input (missing file, malformed file, bad arguments).</summary>
    public const int BadInput = 2;

    /// <summary>Runs the command line; returns the process exit code.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs with explicit writers (tests capture output this way).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("Peft.Native: parameter-efficient fine-tuning for .NET");
        root.Subcommands.Add(InspectCommand.Create(stdout, stderr));
        root.Subcommands.Add(TrainCommand.Create(stdout, stderr));
        root.Subcommands.Add(MergeCommand.Create(stdout, stderr));
        root.Subcommands.Add(GenerateCommand.Create(stdout, stderr));
        root.Subcommands.Add(GenerateCommand.CreateForward(stdout, stderr));
        root.Subcommands.Add(BenchCommand.Create(stdout, stderr));
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) stderr.WriteLine($"error: {e.Message}");
            return BadInput;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr });
    }
}
