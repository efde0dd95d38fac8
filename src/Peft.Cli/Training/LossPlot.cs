namespace Peft.Cli.Training;

/// <summary>Writes the loss curve of a run as a PNG (ScottPlot): the loss of every step, and the evaluation loss per epoch.</summary>
internal static class LossPlot
{
    public static void Save(string path, IReadOnlyList<double> stepLosses, IReadOnlyList<(int Step, double Loss)> evalLosses, string title)
    {
        var plot = new ScottPlot.Plot();
        var steps = Enumerable.Range(1, stepLosses.Count).Select(i => (double)i).ToArray();
        var train = plot.Add.Scatter(steps, stepLosses.ToArray());
        train.LegendText = "training loss";
        train.MarkerSize = 0;
        if (evalLosses.Count > 0)
        {
            var eval = plot.Add.Scatter(evalLosses.Select(e => (double)e.Step).ToArray(), evalLosses.Select(e => e.Loss).ToArray());
            eval.LegendText = "evaluation loss";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss");
        plot.ShowLegend();
        var tmp = path + ".tmp.png";
        plot.SavePng(tmp, 800, 500);
        File.Move(tmp, path, overwrite: true);   // never a half-written PNG under the final name
    }
}
