using Peft.Core.Random;

namespace Peft.Core.Tests;

[TestFixture]
public class TensorTests
{
    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void LargeStridedCopiesSplitOverThreadsKeepEveryElementInPlace(DType dtype)
    {
        // Above 256 KiB the gather (Contiguous) and the scatter (CopyFrom into a view) run in row chunks on the CPU team;
        // a chunk that started its index counter at the wrong row would put whole rows in the wrong place.
        using var scope = Tensor.NewScope();
        int b = 3, t = 263, h = 12, d = 67;   // ragged, so chunks do not fall on round boundaries, several chunks in either dtype
        var x = Tensor.Randn([b, t, h, d], new Generator(41)).To(dtype);
        var permuted = x.Permute(0, 2, 3, 1).Contiguous();   // [b, h, d, t]: the innermost dimension is strided in x
        var values = permuted.To(DType.F32).ToFloatArray();
        var source = x.To(DType.F32).ToFloatArray();
        int bad = 0;
        for (int i0 = 0; i0 < b; i0++) for (int i1 = 0; i1 < h; i1++) for (int i2 = 0; i2 < d; i2++) for (int i3 = 0; i3 < t; i3++)
            if (values[((i0 * h + i1) * d + i2) * t + i3] != source[((i0 * t + i3) * h + i1) * d + i2]) bad++;
        Assert.That(bad, Is.Zero, "gathered elements out of place");

        var target = Tensor.Zeros([b, h, t, d], dtype);
        target.Transpose(1, 2).CopyFrom(x);   // a [b, t, h, d] view of target: scatter with a non-trivial outer stride
        var scattered = target.To(DType.F32).ToFloatArray();
        bad = 0;
        for (int i0 = 0; i0 < b; i0++) for (int i1 = 0; i1 < h; i1++) for (int i2 = 0; i2 < t; i2++) for (int i3 = 0; i3 < d; i3++)
            if (scattered[((i0 * h + i1) * t + i2) * d + i3] != source[((i0 * t + i2) * h + i1) * d + i3]) bad++;
        Assert.That(bad, Is.Zero, "scattered elements out of place");
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F64)]
    [TestCase(DType.I64)]
    public void ExpandedViewsMaterialiseEveryRowFromItsOwnSource(DType dtype)
    {
        // A stride-0 innermost dimension is filled, not copied element by element: each output row must take the
        // value of its own source element (column c of a [3, 5, 1] tensor expanded to [3, 5, 70], and a scalar to
        // [400, 700] — the latter above the parallel threshold, so rows are filled by several threads).
        using var scope = Tensor.NewScope();
        var column = Tensor.Randn([3, 5, 1], new Generator(43)).To(DType.F32);
        if (dtype == DType.I64) column = (column * 100.0).To(DType.I64).To(DType.F32);
        var expanded = column.To(dtype).Expand(3, 5, 70).Contiguous().To(DType.F32).ToFloatArray();
        var source = column.To(dtype).To(DType.F32).ToFloatArray();
        int bad = 0;
        for (int r = 0; r < 15; r++) for (int j = 0; j < 70; j++) if (expanded[r * 70 + j] != source[r]) bad++;
        Assert.That(bad, Is.Zero, "expanded column");
        float value = dtype == DType.I64 ? 3 : 1.75f;   // exact in every dtype here
        var scalar = Tensor.Full([1, 1], value, dtype).Expand(400, 700).Contiguous().To(DType.F32).ToFloatArray();
        Assert.That(scalar.All(v => v == value), Is.True, "expanded scalar");
    }

    [Test]
    public void ViewsShareStorageAndContiguousCopies()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Arange(0, 12, 1, DType.F32).Reshape(3, 4);
        var t = x.Transpose(0, 1);
        Assert.That(t.IsContiguous, Is.False);
        Assert.That(t.Storage, Is.SameAs(x.Storage));
        Assert.That(t.ToArray<float>(), Is.EqualTo(new float[] { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 }));
        var c = t.Contiguous();
        Assert.That(c.IsContiguous);
        Assert.That(c.Storage, Is.Not.SameAs(x.Storage));
        Assert.That(x.Narrow(1, 1, 2).ToArray<float>(), Is.EqualTo(new float[] { 1, 2, 5, 6, 9, 10 }));
        Assert.That(x.Unsqueeze(1).Shape, Is.EqualTo(new[] { 3, 1, 4 }));
        Assert.That(x.Reshape(-1, 6).Shape, Is.EqualTo(new[] { 2, 6 }));
        Assert.That(x.Permute(1, 0).Shape, Is.EqualTo(new[] { 4, 3 }));
        Assert.That(Tensor.FromArray(new float[] { 1, 2 }, [2, 1]).Expand(2, 3).ToArray<float>(), Is.EqualTo(new float[] { 1, 1, 1, 2, 2, 2 }));
        Assert.Throws<InvalidOperationException>(() => t.View(12));
        Assert.Throws<ShapeMismatchException>(() => x.Reshape(5, -1));
    }

    [Test]
    public void FromArrayInfersOneMinusOneAndRejectsShapesThatDoNotFit()
    {
        using var s = Tensor.NewScope();
        Assert.That(Tensor.FromArray(new long[] { 1, 2, 3, 4, 5, 6 }, [2, -1]).Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(Assert.Throws<ShapeMismatchException>(() => Tensor.FromArray(new float[] { 1, 2, 3, 4 }, [3, -1]))!.Message, Does.Contain("[3, -1]"));
        Assert.Throws<ShapeMismatchException>(() => Tensor.FromArray(new float[] { 1, 2, 3 }, [2, 2]));
    }

    [Test]
    public void WritesThroughAViewReachTheBase()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Zeros([2, 3]);
        x.Narrow(1, 1, 2).FillInPlace(7);
        Assert.That(x.ToArray<float>(), Is.EqualTo(new float[] { 0, 7, 7, 0, 7, 7 }));
    }

    [TestCase(1.0f, (ushort)0x3F80)]
    [TestCase(-2.5f, (ushort)0xC020)]
    [TestCase(1.00390625f, (ushort)0x3F80)]   // exactly halfway to 0x3F81: ties to even (down)
    [TestCase(1.01171875f, (ushort)0x3F82)]   // halfway between 0x3F81 and 0x3F82: ties to even (up)
    [TestCase(3.4028235e38f, (ushort)0x7F80)] // max float rounds to +inf, as torch does
    public void BFloat16RoundsToNearestEven(float value, ushort bits)
    {
        Assert.That(BFloat16.FromSingle(value).Bits, Is.EqualTo(bits));
    }

    [Test]
    public void BFloat16KeepsNaNAndConvertsTensors()
    {
        Assert.That(float.IsNaN(BFloat16.FromSingle(float.NaN).ToSingle()));
        using var s = Tensor.NewScope();
        var x = Tensor.FromArray(new float[] { 1.00390625f, -0.1f, 65504f });
        Assert.That(x.To(DType.BF16).To(DType.F32).ToArray<float>(), Is.EqualTo(new float[] { 1f, -0.10009765625f, 65536f }));
        Assert.That(x.To(DType.F16).To(DType.F32).ToArray<float>()[2], Is.EqualTo(65504f));
    }

    [Test]
    public void PhiloxMatchesThePublishedKnownAnswers()
    {
        // Random123 kat_vectors: philox4x32_10 with counter 0 / key 0 and counter all-ones / key all-ones.
        Assert.That(Philox.Block(0, 0, 0, 0, 0, 0), Is.EqualTo((0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)));
        Assert.That(Philox.Block(~0u, ~0u, ~0u, ~0u, ~0u, ~0u), Is.EqualTo((0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)));
    }

    [Test]
    public void RandomTensorsAreReproducibleAndWellDistributed()
    {
        using var s = Tensor.NewScope();
        var a = Tensor.Randn([100_000], 42).ToArray<float>();
        Assert.That(Tensor.Randn([100_000], 42).ToArray<float>(), Is.EqualTo(a));
        Assert.That(a.Average(), Is.EqualTo(0).Within(0.02));
        Assert.That(a.Select(v => v * v).Average(), Is.EqualTo(1).Within(0.02));
        var u = Tensor.Rand([100_000], 7).ToArray<float>();
        Assert.That(u.Min(), Is.GreaterThanOrEqualTo(0));
        Assert.That(u.Max(), Is.LessThan(1));
        Assert.That(u.Average(), Is.EqualTo(0.5).Within(0.01));
        var gen = new Generator(3);
        var first = Tensor.Randn([5], gen).ToArray<float>();
        Assert.That(Tensor.Randn([5], gen).ToArray<float>(), Is.Not.EqualTo(first), "a generator advances");
    }

    [Test]
    public void ScopesFreeEverythingTheyCreated()
    {
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); // earlier tests' garbage must not move the baseline
        long before = MemoryStats.LiveBytes;
        Tensor kept;
        using (Tensor.NewScope())
        {
            var w = Tensor.Randn([64, 64], 1).RequiresGradient();
            var loss = Tensor.Randn([8, 64], 2).MatMul(w).Relu().Sum();
            loss.Backward();
            kept = w.Grad!; // owned by w, which the scope disposes
            Assert.That(MemoryStats.LiveBytes, Is.GreaterThan(before));
        }
        Assert.That(MemoryStats.LiveBytes, Is.EqualTo(before));
        Assert.That(kept.IsDisposed);
    }

    [Test]
    public void KeepAliveMovesATensorOutOfItsScope()
    {
        Tensor t;
        using (Tensor.NewScope()) t = Tensor.Ones([3]).KeepAlive();
        Assert.That(t.ToArray<float>(), Is.EqualTo(new float[] { 1, 1, 1 }));
        t.Dispose();
        Assert.Throws<ObjectDisposedException>(() => t.ToArray<float>());
    }

    [Test]
    public void ToStringShowsValuesShapeAndDType()
    {
        using var s = Tensor.NewScope();
        var text = Tensor.Arange(0, 6, 1, DType.F32).Reshape(2, 3).ToString();
        Assert.That(text, Does.Contain("[[0.0000, 1.0000, 2.0000]").And.Contain("shape=[2, 3]").And.Contain("dtype=F32"));
        Assert.That(Tensor.Arange(100).ToString(), Does.Contain("..."));
    }

    [Test]
    public void MismatchesGiveTypedExceptionsNamingTheShapes()
    {
        using var s = Tensor.NewScope();
        var ex = Assert.Throws<ShapeMismatchException>(() => Tensor.Zeros([2, 3]).Add(Tensor.Zeros([4])));
        Assert.That(ex!.Message, Does.Contain("[2, 3]").And.Contain("[4]"));
        Assert.Throws<DTypeMismatchException>(() => Tensor.Zeros([2]).Add(Tensor.Zeros([2], DType.F64)));
        Assert.Throws<IndexOutOfRangeException>(() => Tensor.Zeros([5, 2]).Embedding(Tensor.FromArray(new long[] { 5 })));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tensor.Zeros([2]).Transpose(0, 2));
    }
}

[TestFixture]
public class CpuAllocatorTests
{
    [TestCase(1L, 1L)]
    [TestCase(1000L, 1000L)]
    [TestCase(1L << 20, 1L << 20)]
    [TestCase((1L << 20) + 1, (1L << 20) + (1L << 17))]
    [TestCase(50_331_648L, 50_331_648L)]      // 48 MiB is a class boundary
    [TestCase(50_331_649L, 54_525_952L)]      // next class: 52 MiB
    public void SizeClassesWasteAtMostAnEighth(long request, long expected)
    {
        Assert.That(CpuAllocator.SizeClass(request), Is.EqualTo(expected));
        Assert.That(CpuAllocator.SizeClass(request), Is.LessThanOrEqualTo(request * 1.125 + 1));
    }

    [Test]
    public void LargeBlocksAreReusedAndTheCacheCanBeEmptied()
    {
        CpuAllocator.EmptyCache();
        var t = Tensor.Ones([1 << 20]); // 4 MiB
        var storage = t.Storage;
        t.Dispose();
        Assert.That(CpuAllocator.CachedBytes, Is.GreaterThanOrEqualTo(4L << 20));
        using (var again = Tensor.Zeros([1 << 20]))
            Assert.That(again.ToArray<float>().All(v => v == 0), "a reused block is zeroed when zeros are asked for");
        CpuAllocator.EmptyCache();
        Assert.That(CpuAllocator.CachedBytes, Is.EqualTo(0));
    }
}

[TestFixture]
public class NoLeakTests
{
    [Test]
    public void ConvertingCopiesAndViewsReleaseEverythingWithoutAScope()
    {
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); // earlier tests' garbage must not move the baseline
        long before = MemoryStats.LiveBytes;
        using (var target = Tensor.Zeros([3, 4]))
        using (var source = Tensor.Randn([3, 4], 1, DType.F64))
            target.CopyFrom(source);                      // F64 → F32 goes through a temporary
        using (var x = Tensor.Randn([2, 3, 4], 2))
        using (var t = x.Transpose(1, 2))
        using (var r = t.Reshape(2, 12)) { }
        Assert.That(MemoryStats.LiveBytes, Is.EqualTo(before));
    }
}
