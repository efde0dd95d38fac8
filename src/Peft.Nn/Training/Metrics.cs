using Peft.Core;

namespace Peft.Nn;

/// <summary>
/// Arg-max classification metrics with scikit-learn's definitions: accuracy, per-class F1 = 2TP / (2TP + FP + FN)
/// (0 when a class never occurs nor is predicted), macro-F1 over the classes seen in the labels or the predictions,
/// micro-F1 (= accuracy for single-label tasks). Positions labelled −100 are skipped, as transformers' losses skip them.
/// </summary>
/// <example><code>
/// var metrics = new ClassificationMetrics(numClasses: 2);
/// foreach (var batch in eval) metrics.Add(model.Forward(batch.Ids).Logits, batch.Labels);
/// Console.WriteLine($"accuracy {metrics.Accuracy:P1}, macro-F1 {metrics.MacroF1:F3}");
/// </code></example>
public sealed class ClassificationMetrics
{
    /// <summary>The label transformers' losses ignore.</summary>
    public const long IgnoreIndex = -100;

    private readonly long[,] _confusion;

    /// <summary>Metrics over <paramref name="numClasses"/> classes.</summary>
    public ClassificationMetrics(int numClasses)
    {
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "a classifier has at least one class");
        NumClasses = numClasses;
        _confusion = new long[numClasses, numClasses];
    }

    /// <summary>Classes.</summary>
    public int NumClasses { get; }

    /// <summary>Examples (or tokens) counted.</summary>
    public long Count { get; private set; }

    /// <summary>Confusion counts [label, prediction].</summary>
    public long this[int label, int predicted] => _confusion[label, predicted];

    /// <summary>Counts one prediction.</summary>
    public void Add(int predicted, long label)
    {
        if (label == IgnoreIndex) return;
        if (label < 0 || label >= NumClasses) throw new ArgumentOutOfRangeException(nameof(label), label, $"labels must lie in [0, {NumClasses}) or be {IgnoreIndex}");
        if (predicted < 0 || predicted >= NumClasses) throw new ArgumentOutOfRangeException(nameof(predicted), predicted, $"predictions must lie in [0, {NumClasses})");
        _confusion[label, predicted]++;
        Count++;
    }

    /// <summary>Counts the arg-max of <paramref name="logits"/> [..., classes] against <paramref name="labels"/> [...]
    /// (sequence classification: [B, C] and [B]; token classification: [B, T, C] and [B, T]).</summary>
    public void Add(Tensor logits, Tensor labels)
    {
        if (logits.Size(-1) != NumClasses)
            throw new ShapeMismatchException($"logits have {logits.Size(-1)} classes, the metrics {NumClasses}");
        if (logits.NumEl != labels.NumEl * NumClasses)
            throw new ShapeMismatchException($"logits {Shapes.Format(logits.Shape)} do not match labels {Shapes.Format(labels.Shape)}");
        var l = logits.ToFloatArray();
        var y = labels.DType == DType.I64 ? labels.ToArray<long>() : labels.ToDoubleArray().Select(v => (long)v).ToArray();
        for (int i = 0; i < y.Length; i++)
        {
            int best = 0;
            for (int c = 1; c < NumClasses; c++) if (l[i * NumClasses + c] > l[i * NumClasses + best]) best = c;
            Add(best, y[i]);
        }
    }

    /// <summary>Share of correct predictions (NaN before any).</summary>
    public double Accuracy
    {
        get
        {
            long correct = 0;
            for (int c = 0; c < NumClasses; c++) correct += _confusion[c, c];
            return Count == 0 ? double.NaN : (double)correct / Count;
        }
    }

    /// <summary>F1 of class <paramref name="positive"/> (scikit-learn's binary F1 with that pos_label).</summary>
    public double F1(int positive)
    {
        long tp = _confusion[positive, positive], fp = 0, fn = 0;
        for (int c = 0; c < NumClasses; c++)
        {
            if (c == positive) continue;
            fp += _confusion[c, positive];
            fn += _confusion[positive, c];
        }
        long denominator = 2 * tp + fp + fn;
        return denominator == 0 ? 0 : 2.0 * tp / denominator;
    }

    /// <summary>Mean F1 over the classes that occur as a label or a prediction (scikit-learn's average="macro").</summary>
    public double MacroF1
    {
        get
        {
            var seen = Enumerable.Range(0, NumClasses).Where(c => Enumerable.Range(0, NumClasses).Any(k => _confusion[c, k] > 0 || _confusion[k, c] > 0)).ToList();
            return seen.Count == 0 ? double.NaN : seen.Average(F1);
        }
    }

    /// <summary>Micro-averaged F1: for single-label classification it equals <see cref="Accuracy"/>.</summary>
    public double MicroF1 => Accuracy;
}

/// <summary>What <see cref="Trainer{TBatch}.Evaluate"/> reports: the mean loss over batches (transformers' eval_loss),
/// its exponential (perplexity, meaningful for language-model losses) and, when logits and labels were given, the
/// classification metrics.</summary>
public sealed record EvalResult(double Loss, ClassificationMetrics? Classification)
{
    /// <summary>exp(mean loss).</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>Accuracy, or null without classification metrics.</summary>
    public double? Accuracy => Classification?.Accuracy;

    /// <summary>Macro-F1, or null without classification metrics.</summary>
    public double? MacroF1 => Classification?.MacroF1;
}

/// <summary>One evaluation batch's outputs: the loss and, for classification, logits [..., C] and labels [...].</summary>
public sealed record EvalStep(Tensor Loss, Tensor? Logits = null, Tensor? Labels = null);
