using Peft.Core;
using Peft.Core.Random;

namespace Peft.Nn;

/// <summary>
/// torch.nn.LSTM with <c>batch_first = True</c>: input [B, T, in] → output [B, T, H·directions] (the hidden state of
/// the last layer at every step; the final (h, c) are not returned, as P-tuning's <c>lstm_head(x)[0]</c> needs none).
/// Parameters use PyTorch's names — <c>weight_ih_l{k}</c> [4H, in], <c>weight_hh_l{k}</c> [4H, H], <c>bias_ih_l{k}</c>,
/// <c>bias_hh_l{k}</c> [4H], with <c>_reverse</c> for the backward direction — and PyTorch's init U(−1/√H, 1/√H).
/// Gates in PyTorch's order i, f, g, o: c' = σ(f)⊙c + σ(i)⊙tanh(g), h' = σ(o)⊙tanh(c'). Dropout acts between layers
/// in training, not after the last. The step loop is built from autograd ops, so the backward comes for free.
/// </summary>
public sealed class Lstm : Module, IUnaryModule
{
    /// <summary>Creates the layer with PyTorch's initialisation.</summary>
    public Lstm(int inputSize, int hiddenSize, int numLayers = 1, bool bidirectional = false, double dropout = 0, DType dtype = DType.F32, Generator? generator = null)
    {
        if (numLayers < 1) throw new ArgumentOutOfRangeException(nameof(numLayers), "an LSTM needs at least one layer");
        InputSize = inputSize;
        HiddenSize = hiddenSize;
        NumLayers = numLayers;
        Bidirectional = bidirectional;
        Dropout = dropout;
        double bound = 1 / Math.Sqrt(hiddenSize);
        for (int layer = 0; layer < numLayers; layer++)
            foreach (var suffix in Directions())
            {
                int inWidth = layer == 0 ? inputSize : hiddenSize * (bidirectional ? 2 : 1);
                RegisterParameter($"weight_ih_l{layer}{suffix}", Tensor.Rand([4 * hiddenSize, inWidth], generator, dtype, -bound, bound));
                RegisterParameter($"weight_hh_l{layer}{suffix}", Tensor.Rand([4 * hiddenSize, hiddenSize], generator, dtype, -bound, bound));
                RegisterParameter($"bias_ih_l{layer}{suffix}", Tensor.Rand([4 * hiddenSize], generator, dtype, -bound, bound));
                RegisterParameter($"bias_hh_l{layer}{suffix}", Tensor.Rand([4 * hiddenSize], generator, dtype, -bound, bound));
            }
    }

    /// <summary>Input features.</summary>
    public int InputSize { get; }
    /// <summary>Hidden size H per direction.</summary>
    public int HiddenSize { get; }
    /// <summary>Stacked layers.</summary>
    public int NumLayers { get; }
    /// <summary>Whether a second direction reads the sequence backwards (output width 2H).</summary>
    public bool Bidirectional { get; }
    /// <summary>Dropout probability between layers (training only).</summary>
    public double Dropout { get; }

    private string[] Directions() => Bidirectional ? ["", "_reverse"] : [""];

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        if (input.Rank != 3 || input.Size(2) != InputSize)
            throw new ArgumentException($"LSTM input must be [batch, steps, {InputSize}] (batch_first), got {Shapes.Format(input.Shape)}");
        Tensor x = input;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            var outputs = Directions().Select(suffix => Run(x, Parameter($"weight_ih_l{layer}{suffix}"), Parameter($"weight_hh_l{layer}{suffix}"),
                Parameter($"bias_ih_l{layer}{suffix}"), Parameter($"bias_hh_l{layer}{suffix}"), reverse: suffix.Length > 0)).ToArray();
            var next = outputs.Length == 1 ? outputs[0] : Tensor.Cat(outputs, -1);
            if (outputs.Length > 1) foreach (var o in outputs) o.Dispose();
            if (layer < NumLayers - 1 && IsTraining && Dropout > 0)
            {
                var dropped = next.Dropout(Dropout);
                next.Dispose();
                next = dropped;
            }
            if (!ReferenceEquals(x, input)) x.Dispose();
            x = next;
        }
        return x;
    }

    /// <summary>One direction of one layer over x [B, T, in]: the hidden states [B, T, H] in time order.</summary>
    public static Tensor Run(Tensor x, Tensor weightIh, Tensor weightHh, Tensor biasIh, Tensor biasHh, bool reverse)
    {
        int batch = x.Size(0), steps = x.Size(1), hidden = weightHh.Size(1);
        using var projected = x.Linear(weightIh, biasIh);                   // every step's input projection at once [B, T, 4H]
        using var h0 = Tensor.Zeros([batch, hidden], x.DType, x.Device);
        var h = h0;
        var c = Tensor.Zeros([batch, hidden], x.DType, x.Device);
        var states = new Tensor[steps];
        try
        {
            for (int i = 0; i < steps; i++)
            {
                int t = reverse ? steps - 1 - i : i;
                using var xt = projected.Select(1, t);
                using var recurrent = h.Linear(weightHh, biasHh);
                using var gates = xt.Add(recurrent);
                using var ig = gates.Narrow(-1, 0, hidden);
                using var fg = gates.Narrow(-1, hidden, hidden);
                using var gg = gates.Narrow(-1, 2 * hidden, hidden);
                using var og = gates.Narrow(-1, 3 * hidden, hidden);
                using var inGate = ig.Sigmoid();
                using var forget = fg.Sigmoid();
                using var cell = gg.Tanh();
                using var outGate = og.Sigmoid();
                using var kept = forget.Mul(c);
                using var written = inGate.Mul(cell);
                var cNext = kept.Add(written);
                using var squashed = cNext.Tanh();
                var hNext = outGate.Mul(squashed);
                c.Dispose();
                c = cNext;
                states[t] = hNext;
                h = hNext;                                                    // states[t] owns it; disposed with states below
            }
            return Tensor.Stack(states, 1);
        }
        finally
        {
            foreach (var s in states) s?.Dispose();
            c.Dispose();
        }
    }
}
