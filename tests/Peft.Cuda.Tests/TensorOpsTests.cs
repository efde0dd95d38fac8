namespace Peft.Cuda.Tests;

/// <summary>
/// Tensor's front-ends on CUDA tensors (CudaOps: kernels/elementwise.cu, kernels/rows.cu, cuBLAS) against the same
/// calls on the CPU, on fresh random inputs — broadcasting, strided views and every op number included — and
/// autograd end to end: the same small network's gradients on both devices.
/// </summary>
public class TensorOpsTests : GpuTest
{
    /// <summary>Runs <paramref name="op"/> on CPU inputs and on their device copies; returns ‖gpu − cpu‖/‖cpu‖.</summary>
    private double Versus(Func<Tensor[], Tensor> op, params Tensor[] inputs)
    {
        using var want = op(inputs);
        var onDevice = inputs.Select(t => t.To(Gpu.Device)).ToArray();
        try
        {
            using var got = op(onDevice);
            Assert.That(got.Device, Is.EqualTo(Gpu.Device), "the result stays on the GPU");
            Assert.That(got.Shape, Is.EqualTo(want.Shape));
            return Error(got, want);
        }
        finally
        {
            foreach (var t in onDevice) t.Dispose();
        }
    }

    private static double Error(Tensor got, Tensor want)
    {
        var g = got.ToDoubleArray();
        var w = want.ToDoubleArray();
        Assert.That(g.Any(double.IsNaN), Is.EqualTo(w.Any(double.IsNaN)), "NaN where the CPU has none (an element left unwritten?)");
        double num = 0, den = 0;
        for (int i = 0; i < g.Length; i++)
        {
            if (double.IsNaN(w[i]) && double.IsNaN(g[i])) continue;
            double d = g[i] - w[i];
            num += d * d;
            den += w[i] * w[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    private static Tensor R(int[] shape, Generator g, double std = 1) => Tensor.Randn(shape, g, std: std);

    /// <summary>The gradient of Σ f(leaves) ⊙ t[^1] for input <paramref name="i"/>: every t but the last becomes a fresh
    /// leaf; the last weights the output (so transposed gradients cannot hide in a plain sum).</summary>
    private static Tensor GradOf(Func<Tensor[], Tensor> f, Tensor[] t, int i)
    {
        var leaves = t[..^1].Select(x => x.Clone().RequiresGradient()).ToArray();
        try
        {
            using var y = f(leaves);
            using var w = y.Mul(t[^1]);
            using var loss = w.Sum();
            loss.Backward();
            return leaves[i].Grad!.Clone();
        }
        finally
        {
            foreach (var l in leaves) l.Dispose();
        }
    }

    [Test]
    public void BinaryOpsBroadcastLikeTheCpu([Values("Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum", "Greater", "Less", "Equal")] string name)
    {
        var g = Fresh();
        var op = Enum.Parse<Peft.Core.Cpu.BinaryOp>(name);
        // Pow of negative bases is NaN on both devices; Equal needs ties, so its inputs are rounded to halves.
        Func<Tensor, Tensor, Tensor> f = op switch
        {
            Peft.Core.Cpu.BinaryOp.Pow => (a, b) => { using var pa = a.Abs(); return Tensor.BinaryKernel(op, pa, b); },
            Peft.Core.Cpu.BinaryOp.Equal => (a, b) =>
            {
                using var ha = a.Mul(2.0).Clamp(-2, 2).Sign();
                using var hb = b.Mul(2.0).Clamp(-2, 2).Sign();
                return Tensor.BinaryKernel(op, ha, hb);
            },
            _ => (a, b) => Tensor.BinaryKernel(op, a, b),
        };
        using var a1 = R([37, 129], g);
        using var b1 = R([37, 129], g);
        using var a2 = R([4, 1, 33], g);
        using var b2 = R([5, 33], g);
        using var s = R([], g);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => f(t[0], t[1]), a1, b1), Is.LessThanOrEqualTo(1e-6), "same shape");
            Assert.That(Versus(t => f(t[0], t[1]), a2, b2), Is.LessThanOrEqualTo(1e-6), "[4,1,33] with [5,33]");
            Assert.That(Versus(t => f(t[0], t[1]), a1, s), Is.LessThanOrEqualTo(1e-6), "with a 0-dim tensor");
            Assert.That(Versus(t =>
            {
                using var fa = t[0].Reshape(-1);
                using var fb = t[1].Reshape(-1);
                using var na = fa.Narrow(0, 1, fa.Size(0) - 1);   // dense but 4 bytes past a 16-byte boundary: the scalar path
                using var nb = fb.Narrow(0, 1, fb.Size(0) - 1);
                return f(na, nb);
            }, a1, b1), Is.LessThanOrEqualTo(1e-6), "misaligned dense views");
            Assert.That(Versus(t => { using var at = t[0].Transpose(0, 1); return f(at, t[1]); }, a1, R([129, 37], g)), Is.LessThanOrEqualTo(1e-6), "a transposed view");
        });
    }

    [Test]
    public void UnaryOpsMatchTheCpu()
    {
        var g = Fresh();
        using var x = R([4099], g, std: 2);
        using var positive = x.Abs().Add(0.1);
        var cases = new (string Name, Func<Tensor, Tensor> F, bool Positive)[]
        {
            ("neg", t => t.Neg(), false), ("exp", t => t.Exp(), false), ("log", t => t.Log(), true), ("sqrt", t => t.Sqrt(), true),
            ("rsqrt", t => t.Rsqrt(), true), ("abs", t => t.Abs(), false), ("tanh", t => t.Tanh(), false), ("sigmoid", t => t.Sigmoid(), false),
            ("relu", t => t.Relu(), false), ("gelu", t => t.Gelu(), false), ("gelu_tanh", t => t.Gelu(approximateTanh: true), false),
            ("silu", t => t.Silu(), false), ("sign", t => t.Sign(), false), ("sin", t => t.Sin(), false), ("cos", t => t.Cos(), false),
            ("clamp", t => t.Clamp(-0.5, 0.7), false), ("pow", t => t.Pow(1.7), true), ("add", t => t.Add(0.25), false), ("mul", t => t.Mul(-3.0), false),
            ("round", t => t.Mul(4.0).Round(), false),
        };
        Assert.Multiple(() =>
        {
            foreach (var (name, f, pos) in cases)
                Assert.That(Versus(t => f(t[0]), pos ? positive : x), Is.LessThanOrEqualTo(1e-6), name);
        });
    }

    [TestCase(2, 3, 5, 5, 16, false, false)]
    [TestCase(2, 3, 37, 37, 72, true, false)]    // D not a multiple of 32, ragged tiles, causal
    [TestCase(2, 2, 3, 41, 64, true, true)]      // a KV cache's past (Tq < Tk), padding
    [TestCase(1, 4, 70, 70, 128, true, true)]    // the largest head dim, several tiles each way
    public void FusedAttentionMatchesTheCpuCompositeForwardAndBackward(int b, int h, int tq, int tk, int d, bool causal, bool padded)
    {
        // kernels/attention.cu (scores never stored) against matmul + masked softmax + matmul on the CPU.
        var g = Fresh();
        using var q = R([b, h, tq, d], g);
        using var k = R([b, h, tk, d], g);
        using var v = R([b, h, tk, d], g);
        using var up = R([b, h, tq, d], g);
        using var mask = padded ? Tensor.FromArray(Enumerable.Range(0, b * tk).Select(i => (byte)(i % tk < 3 ? 0 : 1)).ToArray(), [b, 1, 1, tk]) : null;
        Tensor Attend(Tensor[] t) => Tensor.ScaledDotProductAttention(t[0], t[1], t[2], mask, isCausal: causal);
        Tensor Grad(Tensor[] t, int i) => GradOf(Attend, t, i);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(Attend, q, k, v), Is.LessThanOrEqualTo(1e-5), "output");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => Grad(t, i), q, k, v, up), Is.LessThanOrEqualTo(1e-4), $"gradient of input {i}");
        });
    }

    [TestCase(1, 1, 1)]
    [TestCase(37, 70, 5)]      // ragged row and column tiles
    [TestCase(33, 129, 16)]    // LoHa's usual rank, one R chunk
    [TestCase(64, 300, 40)]    // several R chunks, the last one partial
    public void LowRankHadamardMatchesTheCpuForwardAndBackward(int m, int n, int r)
    {
        // kernels/lycoris.cu (LoHa's ΔW, the rank-r products never stored) against Peft.Core.Cpu.LowRankHadamard, which
        // rounds the same way; the factor gradients add cuBLAS GEMMs of the kernel's G1, G2.
        var g = Fresh();
        using var a1 = R([m, r], g);
        using var b1 = R([r, n], g);
        using var a2 = R([m, r], g);
        using var b2 = R([r, n], g);
        using var up = R([m, n], g);
        Tensor Delta(Tensor[] t)
        {
            if (t[0].Device != Device.Cpu) PoisonBlocks(2, (long)m * n * 4);   // outputs start as NaN: every element written
            return Tensor.LowRankHadamard(t[0], t[1], t[2], t[3], 0.625);
        }
        Tensor Grad(Tensor[] t, int i) => GradOf(Delta, t, i);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(Delta, a1, b1, a2, b2), Is.LessThanOrEqualTo(1e-6), "ΔW");
            for (int i = 0; i < 4; i++)
                Assert.That(Versus(t => Grad(t, i), a1, b1, a2, b2, up), Is.LessThanOrEqualTo(1e-5), $"gradient of factor {i}");
        });
    }

    [Test]
    public void SegmentedLoraMatchesTheCpuWithRaggedTilesAndRanks()
    {
        // kernels/sgmv.cu: 4 adapters (ranks 1, 16, 20 — a partial 16-chunk — and 64, the limit) over 53 rows in an
        // interleaved order (several 16-row tiles per adapter, the last partial), base rows between them; K = 70 and
        // C = 300 are not multiples of the 32 lanes or the 256 columns per block.
        var g = Fresh();
        int rows = 53, k = 70, c = 300;
        int[] ranks = [1, 16, 20, 64];
        double[] scales = [0.5, 2.0, -1.25, 0.125];
        using var x = R([rows, k], g);
        using var baseOut = R([rows, c], g);
        var a = ranks.Select(r => R([r, k], g)).ToArray();
        var b = ranks.Select(r => R([c, r], g)).ToArray();
        int[] rowAdapter = Enumerable.Range(0, rows).Select(i => i % 7 == 3 ? -1 : (i * 5) % 4).ToArray();
        try
        {
            Assert.That(Versus(t => Tensor.SegmentedLora(t[0], t[1], rowAdapter, t[2..6], t[6..10], scales), [baseOut, x, .. a, .. b]),
                Is.LessThanOrEqualTo(1e-5));
        }
        finally
        {
            foreach (var t in a.Concat(b)) t.Dispose();
        }
    }

    /// <summary>Poisons the next <paramref name="count"/> allocations of <paramref name="bytes"/> (all held, then returned).</summary>
    private void PoisonBlocks(int count, long bytes)
    {
        var held = Enumerable.Range(0, count).Select(_ => CudaTensors.Empty([checked((int)((bytes + 3) / 4))], DType.F32, Gpu)).ToList();
        foreach (var t in held) { CudaTensors.FillBytes(t, 0xFF); t.Dispose(); }
    }

    [TestCase(2, 3, 37, 37, 72, true)]    // ragged tiles, causal
    [TestCase(1, 2, 40, 40, 128, false)]  // the largest head dim, two tiles each way
    public void FusedAttentionWithDropoutDropsTheCpuCompositesElements(int b, int h, int tq, int tk, int d, bool causal)
    {
        // kernels/attention.cu draws the dropout mask in-kernel from the Philox counters the composite's Dropout
        // reserves: with the same seed the GPU drops exactly the CPU's elements (forward and every gradient).
        var g = Fresh();
        using var q = R([b, h, tq, d], g);
        using var k = R([b, h, tk, d], g);
        using var v = R([b, h, tk, d], g);
        using var up = R([b, h, tq, d], g);
        Tensor Attend(Tensor[] t)
        {
            var gen = new Generator(77);
            return Tensor.ScaledDotProductAttention(t[0], t[1], t[2], isCausal: causal, dropoutP: 0.2, generator: gen);
        }
        Tensor Grad(Tensor[] t, int i) => GradOf(Attend, t, i);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(Attend, q, k, v), Is.LessThanOrEqualTo(1e-5), "output");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => Grad(t, i), q, k, v, up), Is.LessThanOrEqualTo(1e-4), $"gradient of input {i}");
        });
    }

    [Test]
    public void FusedAttentionUnderBf16AutocastIsTheRoundedF32AttentionOfRoundedInputs()
    {
        // Under autocast the GPU keeps kernels/attention.cu: q, k, v rounded to BF16, F32 inside, the output rounded once.
        var g = Fresh();
        using var q = R([2, 3, 37, 64], g);
        using var k = R([2, 3, 37, 64], g);
        using var v = R([2, 3, 37, 64], g);
        using var qr = q.To(DType.BF16).To(DType.F32);
        using var kr = k.To(DType.BF16).To(DType.F32);
        using var vr = v.To(DType.BF16).To(DType.F32);
        using var exact = Tensor.ScaledDotProductAttention(qr, kr, vr, isCausal: true);
        using var want = exact.To(DType.BF16);
        using var qd = q.To(Gpu.Device);
        using var kd = k.To(Gpu.Device);
        using var vd = v.To(Gpu.Device);
        Tensor got;
        using (Autocast.Enable(DType.BF16)) got = Tensor.ScaledDotProductAttention(qd, kd, vd, isCausal: true);
        using (got)
        {
            Assert.That(got.DType, Is.EqualTo(DType.BF16));
            Assert.That(Error(got, want), Is.LessThanOrEqualTo(4e-3));
        }
    }

    [Test]
    public void RoundingAndByteCastsAreTheCpusBitForBit()
    {
        // Ties included: round goes half to even on both (MathF.Round's default, rintf).
        var g = Fresh();
        using var x = R([5003], g, std: 40);
        using var halves = x.Round().Add(0.5);
        using var i8 = Tensor.FromArray(Enumerable.Range(0, 1001).Select(i => (sbyte)(i % 255 - 127)).ToArray());
        using var u8 = Tensor.FromArray(Enumerable.Range(0, 1001).Select(i => (byte)(i * 7 % 256)).ToArray());
        using var wide = Tensor.FromArray(new[] { -3f, 0f, 0.7f, 1f, 254.9f, 255f, 300f, float.NaN, float.NegativeInfinity, float.PositiveInfinity });
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => t[0].Round(), x), Is.EqualTo(0), "round");
            Assert.That(Versus(t => t[0].Round(), halves), Is.EqualTo(0), "round of exact halves");
            Assert.That(Versus(t => t[0].To(DType.F32), i8), Is.EqualTo(0), "i8 → f32");
            Assert.That(Versus(t => t[0].To(DType.F32), u8), Is.EqualTo(0), "u8 → f32");
            Assert.That(Versus(t => t[0].To(DType.U8), wide), Is.EqualTo(0), "f32 → u8 as .NET converts (−3 → 253, 300 → 44, NaN → 0)");
            Assert.That(Versus(t => { using var m = t[0].Gt(t[1]); return Tensor.Where(m, t[0], t[1]); }, x, halves), Is.EqualTo(0), "a comparison mask made on the GPU");
        });
    }

    [Test]
    public void TheTensorActivationQuantizerOfLlmInt8MatchesTheArrayReference()
    {
        var g = Fresh();
        using var x = R([64, 96], g, std: 2.5);
        var host = x.ToArray<float>();
        var (codes, stats, outliers) = Peft.Core.Quantization.LlmInt8.QuantizeActivations(host, 64, 96, 6.0);
        Assert.That(outliers, Is.Not.Empty, "the case has outliers");
        using var d = x.To(Gpu.Device);
        var (tc, ts, to) = Peft.Core.Quantization.LlmInt8.QuantizeActivations(d, 6.0);
        using (tc)
        using (ts)
        {
            Assert.That(tc.Device, Is.EqualTo(Gpu.Device));
            Assert.That(tc.ToArray<float>(), Is.EqualTo(codes));
            Assert.That(ts.ToArray<float>(), Is.EqualTo(stats));
            Assert.That(to, Is.EqualTo(outliers));
        }
    }

    [Test]
    public void DerivativeKernelsMatchTheCpuThroughBackward()
    {
        var g = Fresh();
        using var x = R([2053], g, std: 2);
        foreach (var (name, f) in new (string, Func<Tensor, Tensor>)[]
                 { ("relu", t => t.Relu()), ("gelu", t => t.Gelu()), ("gelu_tanh", t => t.Gelu(true)), ("silu", t => t.Silu()), ("clamp", t => t.Clamp(-1, 1)) })
        {
            Assert.That(Versus(t =>
            {
                using var leaf = t[0].Clone().RequiresGradient();
                using var y = f(leaf);
                using var loss = y.Sum();
                loss.Backward();
                return leaf.Grad!.Clone();
            }, x), Is.LessThanOrEqualTo(1e-6), name);
        }
    }

    [Test]
    public void ReductionsOverAnyDimsMatchTheCpu()
    {
        var g = Fresh();
        using var x = R([6, 7, 129], g);
        Assert.Multiple(() =>
        {
            foreach (var dims in new[] { null, new[] { -1 }, new[] { 0 }, new[] { 1 }, new[] { 0, 2 }, new[] { 0, 1 } })
            {
                string label = dims == null ? "all" : string.Join(",", dims);
                Assert.That(Versus(t => t[0].Sum(dims), x), Is.LessThanOrEqualTo(1e-5), "sum " + label);
                Assert.That(Versus(t => t[0].Max(dims, keepDim: true), x), Is.EqualTo(0), "max " + label);
                Assert.That(Versus(t => t[0].Min(dims), x), Is.EqualTo(0), "min " + label);
            }
            Assert.That(Versus(t => { using var v = t[0].Transpose(0, 2); return v.Sum(1); }, x), Is.LessThanOrEqualTo(1e-5), "a strided input");
            Assert.That(Versus(t => t[0].Mean([0, 1]), R([4096, 8, 3], g)), Is.LessThanOrEqualTo(1e-5), "a long reduction");
        });
    }

    [Test]
    public void CopiesViewsAndFillsMatchTheCpu()
    {
        var g = Fresh();
        using var x = R([3, 5, 7, 11], g);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => { using var p = t[0].Permute(2, 0, 3, 1); return p.Contiguous(); }, x), Is.EqualTo(0), "permuted copy");
            Assert.That(Versus(t => { using var e = t[0].Narrow(1, 1, 1); return e.Expand([3, 4, 7, 11]).Contiguous(); }, x), Is.EqualTo(0), "expanded copy");
            Assert.That(Versus(t =>
            {
                var c = t[0].Clone();
                using var window = c.Narrow(3, 2, 5);
                using var src = t[1].Narrow(3, 0, 5);
                window.CopyFrom(src);
                return c;
            }, x, R([3, 5, 7, 11], g)), Is.EqualTo(0), "CopyFrom into a strided window");
            Assert.That(Versus(t => Tensor.FullLike(t[0], 2.5), x), Is.EqualTo(0), "FullLike");
            Assert.That(Versus(t => t[0].To(DType.BF16).To(DType.F32), x), Is.EqualTo(0), "bf16 round trip");
            Assert.That(Versus(t => t[0].To(DType.F16).To(DType.F32), x), Is.EqualTo(0), "f16 round trip");
        });
        using var d = x.To(Gpu.Device);
        Assert.That(d.Sum().Item(), Is.EqualTo(x.Sum().Item()).Within(1e-3), "Item reads the device value");
    }

    [Test]
    public void MatMulLayoutsMatchTheCpu()
    {
        var g = Fresh();
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([67, 129], g), R([129, 93], g)), Is.LessThanOrEqualTo(1e-5), "2-D");
            Assert.That(Versus(t => { using var bt = t[1].Transpose(0, 1); return t[0].MatMul(bt); }, R([64, 48], g), R([80, 48], g)), Is.LessThanOrEqualTo(1e-5), "a·bᵀ view");
            Assert.That(Versus(t => { using var at = t[0].Transpose(-1, -2); return at.MatMul(t[1]); }, R([5, 48, 64], g), R([5, 48, 30], g)), Is.LessThanOrEqualTo(1e-5), "batched aᵀ·b");
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([3, 1, 17, 24], g), R([4, 24, 9], g)), Is.LessThanOrEqualTo(1e-5), "broadcast batch dims");
            Assert.That(Versus(t => { using var p = t[0].Permute(1, 0, 2); return p.MatMul(t[1]); }, R([17, 6, 24], g), R([6, 24, 9], g)), Is.LessThanOrEqualTo(1e-5), "a permuted batch");
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([33, 40], g).To(DType.F64), R([40, 21], g).To(DType.F64)), Is.LessThanOrEqualTo(1e-12), "f64");
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([33, 40], g).To(DType.BF16), R([40, 21], g).To(DType.BF16)), Is.LessThanOrEqualTo(1e-5), "bf16 operands (exact products, f32 sums)");
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([33, 40], g), R([40, 21], g).To(DType.BF16)), Is.LessThanOrEqualTo(1e-5), "f32 · bf16");
        });
    }

    [Test]
    public void SoftmaxAndNormsMatchTheCpuForwardAndBackward()
    {
        var g = Fresh();
        using var x = R([9, 17, 300], g, std: 3);
        using var up = R([9, 17, 300], g);
        using var w = R([300], g);
        using var b = R([300], g);
        Func<Tensor[], Func<Tensor[], Tensor>, int, Tensor> gradOf = (t, f, i) =>
        {
            var leaves = t.Select(v => v.Clone().RequiresGradient()).ToArray();
            using var y = f(leaves);
            using var weighted = y.Mul(t[^1]);
            using var loss = weighted.Sum();
            loss.Backward();
            var grad = leaves[i].Grad!.Clone();
            foreach (var l in leaves) l.Dispose();
            return grad;
        };
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => t[0].Softmax(), x), Is.LessThanOrEqualTo(1e-5), "softmax");
            Assert.That(Versus(t => t[0].LogSoftmax(1), x), Is.LessThanOrEqualTo(1e-5), "log-softmax over a middle dim");
            Assert.That(Versus(t => gradOf(t, l => l[0].Softmax(), 0), x, up), Is.LessThanOrEqualTo(1e-5), "softmax backward");
            Assert.That(Versus(t => gradOf(t, l => l[0].LogSoftmax(), 0), x, up), Is.LessThanOrEqualTo(1e-5), "log-softmax backward");
            Assert.That(Versus(t => t[0].LayerNorm(t[1], t[2]), x, w, b), Is.LessThanOrEqualTo(1e-5), "layer norm");
            Assert.That(Versus(t => t[0].RmsNorm(t[1]), x, w), Is.LessThanOrEqualTo(1e-5), "rms norm");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => gradOf(t, l => l[0].LayerNorm(l[1], l[2]), i), x, w, b, up), Is.LessThanOrEqualTo(1e-4), $"layer norm gradient {i}");
            for (int i = 0; i < 2; i++)
                Assert.That(Versus(t => gradOf(t, l => l[0].RmsNorm(l[1]), i), x, w, up), Is.LessThanOrEqualTo(1e-4), $"rms norm gradient {i}");
        });
    }

    [Test]
    public void AnMlpTrainsWithTheSameGradientsOnBothDevices()
    {
        var g = Fresh();
        var cpu = new[] { R([32, 64], g), R([128, 64], g, 0.1), R([128], g, 0.1), R([10, 128], g, 0.1), R([10], g, 0.1), R([32, 10], g) };
        Tensor[] Grads(Tensor[] t)
        {
            var p = t.Take(5).Select(v => v.Clone().RequiresGradient()).ToArray();
            using var h = p[0].Linear(p[1], p[2]);
            using var n = h.LayerNorm(null, null);
            using var a = n.Gelu(approximateTanh: true);
            using var y = a.Linear(p[3], p[4]);
            using var s = y.LogSoftmax();
            using var d = s.Sub(t[5]);
            using var sq = d.Mul(d);
            using var loss = sq.Mean();
            loss.Backward();
            var grads = p.Select(v => v.Grad!.Clone()).ToArray();
            foreach (var v in p) v.Dispose();
            return grads;
        }
        var want = Grads(cpu);
        var onDevice = cpu.Select(t => t.To(Gpu.Device)).ToArray();
        var got = Grads(onDevice);
        Assert.Multiple(() =>
        {
            for (int i = 0; i < want.Length; i++)
            {
                Assert.That(got[i].Device, Is.EqualTo(Gpu.Device));
                Assert.That(Error(got[i], want[i]), Is.LessThanOrEqualTo(1e-4), $"gradient of input {i}");
            }
        });
        foreach (var t in cpu.Concat(onDevice).Concat(want).Concat(got)) t.Dispose();
    }

    [Test]
    public void Bf16AutocastMatMulMatchesTheCpusAutocast()
    {
        var g = Fresh();
        using var x = R([48, 96], g);
        using var w = R([96, 40], g);
        Assert.That(Versus(t => { using var _ = Autocast.Enable(DType.BF16); return t[0].MatMul(t[1]); }, x, w), Is.LessThanOrEqualTo(1e-2));
    }

    [TestCase(5)]
    [TestCase(1_000_003)]
    public void DropoutMasksAreTheCpusBitForBit(int n)
    {
        var seed = TestContext.CurrentContext.Random.NextULong();
        TestContext.Out.WriteLine($"seed {seed}");
        var (onCpu, onGpu) = (new Generator(seed), new Generator(seed));
        onCpu.Offset = onGpu.Offset = (1L << 32) + 7; // a counter past 32 bits: its high word is used
        using var x = Tensor.Ones([n]);
        using var xd = x.To(Gpu.Device);
        PoisonNext(Gpu, n * 4L);
        using var want = x.Dropout(0.3, training: true, generator: onCpu);
        using var got = xd.Dropout(0.3, training: true, generator: onGpu);
        Assert.That(got.ToArray<float>(), Is.EqualTo(want.ToArray<float>()));
        Assert.That(onGpu.Offset, Is.EqualTo(onCpu.Offset), "the device draw advances the stream as the CPU's");
    }

    [Test]
    public void EmbeddingGradientsWithRepeatedIdsAreTheCpusBitForBit()
    {
        // index_add sums each row's positions in ascending order, as the CPU does: no atomics, no reordering.
        var g = Fresh();
        using var table = R([1000, 96], g);
        var random = new System.Random((int)(TestContext.CurrentContext.Random.NextUInt() & 0x7fffffff));
        using var ids = Tensor.FromArray(Enumerable.Range(0, 4096).Select(_ => (long)random.Next(50)).ToArray(), [64, 64]); // every id repeats
        using var up = R([64, 64, 96], g);
        Tensor GradOfTable(Tensor t, Tensor u)
        {
            using var leaf = t.Clone().RequiresGradient();
            using var rows = leaf.Embedding(ids);
            using var weighted = rows.Mul(u);
            using var loss = weighted.Sum();
            loss.Backward();
            return leaf.Grad!.Clone();
        }
        using var want = GradOfTable(table, up);
        using var tableD = table.To(Gpu.Device);
        using var upD = up.To(Gpu.Device);
        using var got = GradOfTable(tableD, upD);
        Assert.That(got.ToArray<float>(), Is.EqualTo(want.ToArray<float>()));
    }

    [TestCase(0.0)]
    [TestCase(0.01)]
    public void TheFusedAdamWKernelEqualsTheCpuStepBitForBit(double weightDecay)
    {
        var g = Fresh();
        using var p0 = R([4099, 5], g, std: 0.5);
        using var cpu = p0.Clone().RequiresGradient();
        using var gpu = p0.To(Gpu.Device).RequiresGradient();
        var optCpu = new Peft.Nn.AdamW([cpu], lr: 1e-2, weightDecay: weightDecay);
        var optGpu = new Peft.Nn.AdamW([gpu], lr: 1e-2, weightDecay: weightDecay);
        for (int step = 0; step < 4; step++)
        {
            using var grad = R([4099, 5], g);
            cpu.Grad?.Dispose();
            gpu.Grad?.Dispose();
            cpu.Grad = grad.Clone().KeepAlive();
            gpu.Grad = grad.To(Gpu.Device).KeepAlive();
            optCpu.Step();
            optGpu.Step();
        }
        Assert.That(gpu.ToArray<float>(), Is.EqualTo(cpu.ToArray<float>()));
    }

    [Test]
    public void TheMultiTensorAdamWKernelEqualsTheCpuStepBitForBit()
    {
        // One parameter group of four tensors (adamw_multi_f32: chunks of 4096, the 20,495-element one split in six, a
        // 1-element one) stepped in one launch per step, against the CPU's tensor ops.
        var g = Fresh();
        int[][] shapes = [[4099, 5], [1], [64, 64], [3, 333]];
        var initial = shapes.Select(s => R(s, g, std: 0.5)).ToArray();
        var cpu = initial.Select(t => t.Clone().RequiresGradient()).ToArray();
        var gpu = initial.Select(t => t.To(Gpu.Device).RequiresGradient()).ToArray();
        var optCpu = new Peft.Nn.AdamW(cpu, lr: 1e-2, weightDecay: 0.01);
        var optGpu = new Peft.Nn.AdamW(gpu, lr: 1e-2, weightDecay: 0.01);
        try
        {
            for (int step = 0; step < 3; step++)
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    using var grad = R(shapes[i], g);
                    cpu[i].Grad?.Dispose();
                    gpu[i].Grad?.Dispose();
                    cpu[i].Grad = grad.Clone().KeepAlive();
                    gpu[i].Grad = grad.To(Gpu.Device).KeepAlive();
                }
                optCpu.Step();
                optGpu.Step();
            }
            Assert.Multiple(() =>
            {
                for (int i = 0; i < shapes.Length; i++)
                    Assert.That(gpu[i].ToArray<float>(), Is.EqualTo(cpu[i].ToArray<float>()), $"parameter {i}");
            });
        }
        finally
        {
            optCpu.Dispose();
            optGpu.Dispose();
            foreach (var t in initial.Concat(cpu).Concat(gpu)) t.Dispose();
        }
    }

    [Test]
    public void SmallUploadsAreQueuedThroughTheRingWithoutLosingOne()
    {
        // 300 uploads (the ring has 64 slots) each consumed by a kernel queued right after it; nothing waits between.
        var g = Fresh();
        var hosts = Enumerable.Range(0, 300).Select(i => Tensor.Randn([1 + i % 97], g)).ToList();
        using var total = Tensor.Zeros([], DType.F32, Gpu.Device);
        double want = 0;
        foreach (var h in hosts)
        {
            using var d = h.To(Gpu.Device);
            using var s = d.Sum();
            total.AddInPlace(s);
            using (var hs = h.Sum()) want += hs.Item();
        }
        Assert.That(total.Item(), Is.EqualTo(want).Within(1e-3));
        foreach (var h in hosts) h.Dispose();
    }

    [Test]
    public void MixingDevicesIsAnErrorButAHostScalarIsMovedOver()
    {
        using var d = Tensor.Ones([4]).To(Gpu.Device);
        using var h = Tensor.Ones([4]);
        var e = Assert.Throws<ArgumentException>(() => d.Add(h))!;
        Assert.That(e.Message, Does.Contain("different devices").And.Contain("Add"));
        using var s = Tensor.Scalar(2);
        using var sum = d.Add(s);
        Assert.That(sum.Device, Is.EqualTo(Gpu.Device));
        Assert.That(sum.ToArray<float>(), Is.EqualTo(new[] { 3f, 3f, 3f, 3f }));
    }
}
