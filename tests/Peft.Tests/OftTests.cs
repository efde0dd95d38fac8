using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

/// <summary>OFT's rotation maths, block handling and file keys, beyond the shared invariant matrix.</summary>
[TestFixture]
public class OftTests
{
    private static double[,] Mat(float[] data, int offset, int b)
    {
        var m = new double[b, b];
        for (int i = 0; i < b; i++) for (int j = 0; j < b; j++) m[i, j] = data[offset + i * b + j];
        return m;
    }

    [Test]
    public void TheSkewMatrixFollowsTorchTriuOrderAndExactCayleyIsOrthogonal()
    {
        using var scope = Tensor.NewScope();
        using var rot = new OftRotation(3, 3, blockShare: false, coft: false, eps: 0, useCayleyNeumann: false, neumannTerms: 5);
        using (Autograd.NoGrad()) using (var w = Tensor.FromArray(new float[] { 0.3f, -0.2f, 0.5f }, [1, 3])) rot.Weight.CopyFrom(w);
        // Q = [[0, a, b], [−a, 0, c], [−b, −c, 0]] with (a, b, c) the weight; R = (I − Q)(I + Q)⁻¹.
        double[,] q = { { 0, 0.3, -0.2 }, { -0.3, 0, 0.5 }, { 0.2, -0.5, 0 } };
        var r = Mat(rot.Rotations().ToArray<float>(), 0, 3);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
            {
                double rtR = 0, rQ = 0;
                for (int k = 0; k < 3; k++) { rtR += r[k, i] * r[k, j]; rQ += r[i, k] * ((k == j ? 1 : 0) + q[k, j]); }
                Assert.That(rtR, Is.EqualTo(i == j ? 1 : 0).Within(1e-6), "RᵀR = I");
                Assert.That(rQ, Is.EqualTo((i == j ? 1 : 0) - q[i, j]).Within(1e-6), "R(I + Q) = I − Q");
            }
    }

    [Test]
    public void TheNeumannSeriesIsPeftsSumAndApproachesTheTransposeOfTheExactTransform()
    {
        using var scope = Tensor.NewScope();
        using var series = new OftRotation(4, 4, false, false, 0, useCayleyNeumann: true, neumannTerms: 5);
        using var exact = new OftRotation(4, 4, false, false, 0, useCayleyNeumann: false, neumannTerms: 5);
        var w = Tensor.Randn([1, 6], 3) * 0.05;
        using (Autograd.NoGrad()) { series.Weight.CopyFrom(w); exact.Weight.CopyFrom(w); }
        // I + 2Q + 2Q² + 2Q³ + Q⁴, formed here from Q directly.
        var s = series.Rotations().ToArray<float>();
        var e = exact.Rotations().ToArray<float>();
        var wv = w.ToArray<float>();
        var qm = new double[4, 4];
        int idx = 0;
        for (int i = 0; i < 4; i++) for (int j = i + 1; j < 4; j++, idx++) { qm[i, j] = wv[idx]; qm[j, i] = -wv[idx]; }
        double[,] Mul(double[,] a, double[,] b) { var c = new double[4, 4]; for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) for (int k = 0; k < 4; k++) c[i, j] += a[i, k] * b[k, j]; return c; }
        var q2 = Mul(qm, qm); var q3 = Mul(q2, qm); var q4 = Mul(q3, qm);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
            {
                double want = (i == j ? 1 : 0) + 2 * qm[i, j] + 2 * q2[i, j] + 2 * q3[i, j] + q4[i, j];
                Assert.That(s[i * 4 + j], Is.EqualTo(want).Within(1e-6));
                // PEFT's series sums (I + Q)(I − Q)⁻¹ while its exact path solves (I − Q)(I + Q)⁻¹: the two are transposes
                // (inverse rotations) of each other, and each is reproduced here as PEFT computes it.
                Assert.That(s[i * 4 + j], Is.EqualTo(e[j * 4 + i]).Within(1e-3), "small Q: the series is close to the exact transform's transpose");
            }
    }

    [Test]
    public void ForwardRotatesEachInputBlockBeforeTheBaseLayer()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(6, 5);
        using var layer = new OftLayer(linear);
        layer.UpdateLayer("default", r: 0, blockSize: 3, blockShare: false, coft: false, eps: 0, useCayleyNeumann: true, neumannTerms: 5, initIdentity: false);
        layer.ActiveAdapters.Add("default");
        var x = Tensor.Randn([4, 6], 5);
        using var _ = Autograd.NoGrad();
        var r = layer.Rotation("default").Rotations().ToArray<float>();   // [2, 3, 3]
        var xv = x.ToArray<float>();
        var rotated = new float[24];
        for (int n = 0; n < 4; n++)
            for (int blk = 0; blk < 2; blk++)
                for (int c = 0; c < 3; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < 3; k++) sum += xv[n * 6 + blk * 3 + k] * r[blk * 9 + k * 3 + c];
                    rotated[n * 6 + blk * 3 + c] = (float)sum;
                }
        var expected = linear.Forward(Tensor.FromArray(rotated, [4, 6])).ToArray<float>();
        Assert.That(layer.Forward(x).ToArray<float>(), Is.EqualTo(expected).Within(1e-5));
    }

    [TestCase(16, 5, 4)]
    [TestCase(24, 5, 4)]
    [TestCase(10, 3, 2)]
    [TestCase(20, 7, 5)]
    [TestCase(32, 64, 32)]
    public void BlockSizesAreAdjustedToTheNearestDivisorAsPeftDoes(int inFeatures, int requested, int adjusted) =>
        Assert.That(OftLayer.AdjustToDivisor(inFeatures, requested), Is.EqualTo(adjusted));

    [Test]
    public void AdapterIsSavedAsOftRWeightAndConfigsAreChecked()
    {
        var dir = Directory.CreateTempSubdirectory("peft-oft-").FullName;
        try
        {
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new OftConfig { OftBlockSize = 8, TargetModules = ["q_proj"] }))
                peft.SavePretrained(dir);
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                Assert.That(st.Tensors.Select(t => t.Name), Does.Contain("base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight"));
                Assert.That(st.Info("base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight").Shape, Is.EqualTo(new[] { 2, 28 }), "16 inputs in blocks of 8: 2 × 8·7/2");
            }
            Assert.That(Assert.Throws<InvalidOperationException>(() => new OftConfig { R = 4, OftBlockSize = 8 }.Validate())!.Message, Does.Contain("either r"));
            Assert.That(Assert.Throws<InvalidOperationException>(() => new OftConfig { R = 0, OftBlockSize = 0 }.Validate())!.Message, Does.Contain("either r"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
