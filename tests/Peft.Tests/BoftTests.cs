using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

/// <summary>BOFT's butterfly permutations and rotation, checked against dense matrices built here, and its file keys.</summary>
[TestFixture]
public class BoftTests
{
    [Test]
    public void ButterflyPermutationsInterleaveHalfBlocksAsPeft()
    {
        Assert.That(ButterflyPermutation.Indices(8, 2, 2, 1), Is.EqualTo(Enumerable.Range(0, 8).ToArray()), "factor 0 is the identity");
        Assert.That(ButterflyPermutation.Indices(8, 1, 2, 1), Is.EqualTo(new[] { 0, 1, 4, 5, 2, 3, 6, 7 }));
        Assert.That(ButterflyPermutation.Indices(12, 1, 1, 2), Is.EqualTo(new[] { 0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11 }));
        Assert.That(ButterflyPermutation.Indices(8, 4, 1, 0), Is.EqualTo(Enumerable.Range(0, 8).ToArray()), "no butterfly at all");
        Assert.Throws<ArgumentException>(() => ButterflyPermutation.Indices(8, 4, 2, 1));
    }

    private static double[,] Dense(int n, Func<int, int, double> f)
    {
        var m = new double[n, n];
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) m[i, j] = f(i, j);
        return m;
    }

    private static double[,] Mul(double[,] a, double[,] b)
    {
        int n = a.GetLength(0), k = a.GetLength(1), m = b.GetLength(1);
        var c = new double[n, m];
        for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) for (int t = 0; t < k; t++) c[i, j] += a[i, t] * b[t, j];
        return c;
    }

    [Test]
    public void ForwardIsTheScaledBaseOfTheInputTimesTheDenseButterflyMatrix()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(8, 5);
        using var layer = new BoftLayer(linear);
        layer.UpdateLayer("default", blockSize: 2, blockNum: 0, nButterflyFactor: 3, dropout: 0, initIdentity: false);
        layer.ActiveAdapters.Add("default");
        layer.Eval();
        Assert.That(layer.Shape("default"), Is.EqualTo((2, 4, 3)));
        // Dense M = M_2·M_1·M_0 with M_f = P_f·blockdiag(Q_f)·P_fᵀ, P_f[i, perm_f[i]] = 1 — PEFT's construction.
        var q = layer.Blocks("default").ToArray<float>();   // [3, 4, 2, 2]
        double[,] m = Dense(8, (i, j) => i == j ? 1 : 0);
        for (int f = 0; f < 3; f++)
        {
            var perm = ButterflyPermutation.Indices(8, 4 >> f, 1, 2);
            var p = Dense(8, (i, j) => perm[i] == j ? 1 : 0);
            var pt = Dense(8, (i, j) => perm[j] == i ? 1 : 0);
            int ff = f;
            var bd = Dense(8, (i, j) => i / 2 == j / 2 ? q[((ff * 4 + i / 2) * 2 + i % 2) * 2 + j % 2] : 0);
            m = Mul(Mul(Mul(p, bd), pt), m);
        }
        var mtm = Mul(Dense(8, (i, j) => m[j, i]), m);
        for (int i = 0; i < 8; i++) for (int j = 0; j < 8; j++) Assert.That(mtm[i, j], Is.EqualTo(i == j ? 1 : 0).Within(1e-5), "M is orthogonal");

        var x = Tensor.Randn([3, 8], 2);
        var xv = x.ToArray<float>();
        var xm = new float[24];
        for (int r = 0; r < 3; r++) for (int j = 0; j < 8; j++) { double sum = 0; for (int t = 0; t < 8; t++) sum += xv[r * 8 + t] * m[t, j]; xm[r * 8 + j] = (float)sum; }
        using var _ = Autograd.NoGrad();
        var s = layer.GetSubmodule("boft_s").Parameter("default").Flatten();
        var expected = (linear.Forward(Tensor.FromArray(xm, [3, 8])) - linear.Bias!) * s + linear.Bias!;
        Assert.That(layer.Forward(x).ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-5));
    }

    [Test]
    public void AdapterIsSavedAsBoftRAndBoftSWithoutThePermutations()
    {
        var dir = Directory.CreateTempSubdirectory("peft-boft-").FullName;
        try
        {
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new BoftConfig { BoftBlockSize = 4, BoftNButterflyFactor = 2, TargetModules = ["q_proj"] }))
                peft.SavePretrained(dir);
            using var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            var names = st.Tensors.Select(t => t.Name).Where(n => n.Contains("layers.0.")).ToList();
            Assert.That(names, Is.EquivalentTo(new[] { "base_model.model.model.layers.0.self_attn.q_proj.boft_R", "base_model.model.model.layers.0.self_attn.q_proj.boft_s" }));
            Assert.That(st.Info(names.First(n => n.EndsWith("boft_R"))).Shape, Is.EqualTo(new[] { 2, 4, 4, 4 }));
            var ex = Assert.Throws<ArgumentException>(() => PeftModel.Create(Cases.Create(Cases.Llama), new BoftConfig { BoftBlockSize = 3, TargetModules = ["q_proj"] }));
            Assert.That(ex!.Message, Does.Contain("divisible"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
