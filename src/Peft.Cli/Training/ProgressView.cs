using Spectre.Console;

namespace Peft.Cli.Training;

/// <summary>How training progress is shown: a live Spectre.Console bar on a terminal, plain lines otherwise (logs, tests).</summary>
internal interface IProgressView
{
    void Start(int totalSteps);
    void Step(int epoch, double loss, double tokensPerSecond);
    void EpochDone(int epoch, int epochs, double meanLoss, string evaluation);
    void Stop();
}

/// <summary>One line per epoch, for redirected output.</summary>
internal sealed class PlainProgress(TextWriter o) : IProgressView
{
    public void Start(int totalSteps) { }

    public void Step(int epoch, double loss, double tokensPerSecond) { }

    public void EpochDone(int epoch, int epochs, double meanLoss, string evaluation) =>
        o.WriteLine(string.Format(System.Globalization.CultureInfo.InvariantCulture, "epoch {0}/{1}  training loss {2:F4}  eval: {3}", epoch, epochs, meanLoss, evaluation));

    public void Stop() { }
}

/// <summary>A Spectre.Console progress bar over all steps, with the running loss and throughput in its description.</summary>
internal sealed class SpectreProgress : IProgressView
{
    private ProgressTask? _task;
    private Thread? _thread;
    private readonly ManualResetEventSlim _started = new(), _finished = new();

    public void Start(int totalSteps)
    {
        // Spectre drives the bar from inside its Start callback: run it on its own thread and feed it from here.
        _thread = new Thread(() => AnsiConsole.Progress().AutoClear(false).Columns(
                new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                _task = ctx.AddTask("training", maxValue: totalSteps);
                _started.Set();
                _finished.Wait();
            }));
        _thread.Start();
        _started.Wait();
    }

    public void Step(int epoch, double loss, double tokensPerSecond)
    {
        _task!.Description = string.Format(System.Globalization.CultureInfo.InvariantCulture, "epoch {0}  loss {1:F4}  {2:N0} tokens/s", epoch, loss, tokensPerSecond);
        _task.Increment(1);
    }

    public void EpochDone(int epoch, int epochs, double meanLoss, string evaluation) =>
        AnsiConsole.MarkupLine(Markup.Escape(string.Format(System.Globalization.CultureInfo.InvariantCulture, "epoch {0}/{1}  training loss {2:F4}  eval: {3}", epoch, epochs, meanLoss, evaluation)));

    public void Stop()
    {
        _finished.Set();
        _thread?.Join();
    }
}
