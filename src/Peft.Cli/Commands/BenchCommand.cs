using System.CommandLine;

namespace Peft.Cli.Commands;

/// <summary><c>peft bench &lt;suite&gt;</c>: runs one of the benchmark suites of bench/Peft.Bench (figures go to
/// BENCHMARKS.md with the command that made them; run a Release build for numbers worth recording).</summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var suite = new Argument<string>("suite") { Description = string.Join(", ", Peft.Bench.Suites.Names) };
        var cmd = new Command("bench", "Run a benchmark suite (GEMM, training steps, one layer per PEFT method)");
        cmd.Arguments.Add(suite);
        cmd.SetAction(result =>
        {
            var name = result.GetValue(suite)!;
            if (Peft.Bench.Suites.Run(name, stdout)) return 0;
            stderr.WriteLine($"error: unknown suite '{name}' (one of: {string.Join(", ", Peft.Bench.Suites.Names)})");
            return Program.BadInput;
        });
        return cmd;
    }
}
