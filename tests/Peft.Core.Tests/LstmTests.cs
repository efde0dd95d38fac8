using Peft.Nn;

namespace Peft.Core.Tests;

/// <summary>The LSTM (P-tuning's LSTM head): float64 finite-difference gradients, and the recurrence itself.</summary>
[TestFixture]
public class LstmTests
{
    [TestCase(false)]
    [TestCase(true)]
    public void OneDirectionHasFiniteDifferenceGradients(bool reverse)
    {
        int batch = 2, steps = 4, input = 3, hidden = 5;
        var x = GradCheck.Leaf([batch, steps, input], 1);
        var wih = GradCheck.Leaf([4 * hidden, input], 2, 0.5);
        var whh = GradCheck.Leaf([4 * hidden, hidden], 3, 0.5);
        var bih = GradCheck.Leaf([4 * hidden], 4, 0.5);
        var bhh = GradCheck.Leaf([4 * hidden], 5, 0.5);
        GradCheck.Check(t => Lstm.Run(t[0], t[1], t[2], t[3], t[4], reverse), [x, wih, whh, bih, bhh]);
    }

    [Test]
    public void AStackedBidirectionalLayerHasFiniteDifferenceGradients()
    {
        var lstm = new Lstm(3, 4, numLayers: 2, bidirectional: true, dtype: DType.F64, generator: new Peft.Core.Random.Generator(9));
        var x = GradCheck.Leaf([2, 3, 3], 10);
        GradCheck.Check(t => lstm.Forward(t[0]), [x]);
        Assert.That(lstm.NamedParameters().Select(p => p.Name), Is.EquivalentTo(new[]
        {
            "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
            "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1", "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse",
        }), "PyTorch's parameter names");
        Assert.That(lstm.Parameter("weight_ih_l1").Shape, Is.EqualTo(new[] { 16, 8 }), "layer 1 reads both directions of layer 0");
    }

    [Test]
    public void MatchesTorchNnLstm()
    {
        var file = Path.Combine(RepoPaths.Root, "tests", "fixtures", "lstm-bidirectional", "lstm.safetensors");
        if (!File.Exists(file)) Assert.Ignore($"{file} is absent: run tests/fixtures/make_fixtures.py where torch is installed");
        using var scope = Tensor.NewScope();
        using var fixture = SafeTensors.SafeTensorsFile.Open(file);
        var lstm = new Lstm(3, 5, numLayers: 2, bidirectional: true);
        foreach (var (name, parameter) in lstm.NamedParameters().ToList())
        {
            using var want = fixture.Load(name);
            Assert.That(want.Shape, Is.EqualTo(parameter.Shape), name);
            using (Autograd.NoGrad()) parameter.CopyFrom(want);
        }
        lstm.Eval();
        var output = lstm.Forward(fixture.Load("input")).ToFloatArray();
        var expected = fixture.Load("output").ToFloatArray();
        Assert.That(output, Is.EqualTo(expected).Within(1e-5), "torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)");
    }

    [Test]
    public void OneStepMatchesTheGateEquationsByHand()
    {
        // A single step from zero state: c = σ(i)·tanh(g), h = σ(o)·tanh(c) (the forget gate multiplies c₀ = 0).
        double[] gates = [0.3, -0.2, 0.7, 1.1];                   // i, f, g, o pre-activations for H = 1
        using var x = Tensor.FromArray(new double[] { 1 }, [1, 1, 1]);
        using var wih = Tensor.FromArray(gates, [4, 1]);
        using var whh = Tensor.Zeros([4, 1], DType.F64);
        using var b = Tensor.Zeros([4], DType.F64);
        using var h = Lstm.Run(x, wih, whh, b, b, reverse: false);
        double Sig(double v) => 1 / (1 + Math.Exp(-v));
        double c = Sig(0.3) * Math.Tanh(0.7);
        Assert.That(h.ToDoubleArray()[0], Is.EqualTo(Sig(1.1) * Math.Tanh(c)).Within(1e-12));
    }
}
