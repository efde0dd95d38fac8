using System.Text;
using Peft.Core.SafeTensors;

namespace Peft.Core.Tests;

[TestFixture]
public class SafeTensorsTests
{
    private string _dir = "";

    [SetUp] public void SetUp() => _dir = Directory.CreateTempSubdirectory("peft-st-").FullName;
    [TearDown] public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>Builds a file by hand from the format spec (8-byte LE header length, JSON, raw LE data): what any
    /// other tool would write, independent of our writer.</summary>
    internal static byte[] HandMade(string headerJson, byte[] data)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + data.Length];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    private string Write(string name, byte[] bytes)
    {
        var p = Path.Combine(_dir, name);
        File.WriteAllBytes(p, bytes);
        return p;
    }

    [Test]
    public void ReadsAFileWrittenFromTheSpecByHand()
    {
        var data = new byte[6 * 4 + 2 * 8];
        var floats = new float[] { 1, -2, 3.5f, 0, 5, 6 };
        Buffer.BlockCopy(floats, 0, data, 0, 24);
        BitConverter.TryWriteBytes(data.AsSpan(24), 7L);
        BitConverter.TryWriteBytes(data.AsSpan(32), -9L);
        // Header length 150 is not a multiple of 8 on purpose: the I64 tensor is then misaligned and must be copied.
        var json = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]}}";
        var path = Write("hand.safetensors", HandMade(json, data));
        using var f = SafeTensorsFile.Open(path);
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(f.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "w", "ids" }));
        using var w = f.Load("w");
        Assert.That(w.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(w.ToArray<float>(), Is.EqualTo(floats));
        using var ids = f.Load("ids");
        Assert.That(ids.ToArray<long>(), Is.EqualTo(new long[] { 7, -9 }));
    }

    [Test]
    public void RoundTripsEveryDTypeAndIsByteIdenticalOnResave()
    {
        using var s = Tensor.NewScope();
        var tensors = new Dictionary<string, Tensor>
        {
            ["f64"] = Tensor.Randn([3], 1, DType.F64),
            ["f32.weight"] = Tensor.Randn([2, 5], 2).Transpose(0, 1), // non-contiguous input
            ["bf16"] = Tensor.Randn([4], 3, DType.BF16),
            ["f16"] = Tensor.Randn([4], 4, DType.F16),
            ["i64"] = Tensor.Arange(5),
            ["i32"] = Tensor.Arange(0, 3, 1, DType.I32),
            ["i8"] = Tensor.Arange(-2, 2, 1, DType.I8),
            ["u8"] = Tensor.Arange(0, 7, 1, DType.U8),
            ["empty"] = Tensor.Zeros([0, 4]),
        };
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        var p1 = Path.Combine(_dir, "a.safetensors");
        SafeTensorsWriter.Save(p1, tensors, meta);
        using (var f = SafeTensorsFile.Open(p1))
        {
            Assert.That(f.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "i64", "f64", "empty", "f32.weight", "i32", "bf16", "f16", "i8", "u8" }), "reference order: dtype enum descending, then name");
            Assert.That(f.DataStart % 8, Is.EqualTo(0), "header padded to 8 bytes");
            var loaded = f.LoadAll();
            foreach (var (k, t) in tensors)
            {
                Assert.That(loaded[k].DType, Is.EqualTo(t.DType), k);
                Assert.That(loaded[k].Shape, Is.EqualTo(t.Shape), k);
                Assert.That(loaded[k].ToDoubleArray(), Is.EqualTo(t.ToDoubleArray()), k);
            }
            var p2 = Path.Combine(_dir, "b.safetensors");
            SafeTensorsWriter.Save(p2, loaded, f.Metadata.ToDictionary());
            Assert.That(File.ReadAllBytes(p2), Is.EqualTo(File.ReadAllBytes(p1)));
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    [Test]
    public void ZeroCopyTensorsOutliveTheFileObjectAndNeverWriteBack()
    {
        using var s = Tensor.NewScope();
        var p = Path.Combine(_dir, "z.safetensors");
        SafeTensorsWriter.Save(p, new Dictionary<string, Tensor> { ["x"] = Tensor.Ones([4]) });
        var before = File.ReadAllBytes(p);
        Tensor x;
        using (var f = SafeTensorsFile.Open(p)) x = f.Load("x");
        Assert.That(x.Storage, Is.InstanceOf<ExternalStorage>(), "aligned data is mapped, not copied");
        using (Autograd.NoGrad()) x.FillInPlace(5);
        Assert.That(x.ToArray<float>(), Is.All.EqualTo(5f));
        x.Dispose();
        Assert.That(File.ReadAllBytes(p), Is.EqualTo(before), "copy-on-write mapping: the file is untouched");
    }

    public static IEnumerable<TestCaseData> Malformed()
    {
        const string ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        yield return new TestCaseData(new byte[] { 1, 2, 3 }, "shorter than the 8-byte").SetName("truncated_length_prefix");
        yield return new TestCaseData(HandMade(ok, new byte[8])[..^3], "run past").SetName("truncated_data");
        var huge = HandMade(ok, new byte[8]);
        BitConverter.TryWriteBytes(huge.AsSpan(0, 8), ulong.MaxValue);
        yield return new TestCaseData(huge, "runs past the end").SetName("header_length_huge");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\"", new byte[8]), "not valid UTF-8 JSON").SetName("garbled_json");
        yield return new TestCaseData(HandMade("[1,2]", Array.Empty<byte>()), "not an object").SetName("json_not_object");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8]), "needs 12 bytes").SetName("shape_length_mismatch");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", new byte[8]), "end before they begin").SetName("offsets_reversed");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", new byte[8]), "non-negative").SetName("offset_negative");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8]), "overlap").SetName("overlapping_tensors");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"Q3\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]), "unknown dtype").SetName("unknown_dtype");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}", new byte[8]), "needs more than").SetName("shape_overflow");
        yield return new TestCaseData(HandMade("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]), "twice").SetName("duplicate_name");
        yield return new TestCaseData(HandMade("{\"__metadata__\":{\"k\":1}}", Array.Empty<byte>()), "not a string").SetName("metadata_not_string");
        yield return new TestCaseData(HandMade(new string('[', 5000), Array.Empty<byte>()), "JSON").SetName("deep_json");
        var badUtf8 = HandMade("{\"a\":1}", Array.Empty<byte>());
        badUtf8[10] = 0xFF;
        yield return new TestCaseData(badUtf8, "UTF-8").SetName("invalid_utf8");
    }

    [TestCaseSource(nameof(Malformed))]
    public void MalformedFilesGiveAFormatExceptionNamingTheFileAndProblem(byte[] bytes, string problem)
    {
        var p = Write("bad.safetensors", bytes);
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(p).Dispose());
        Assert.That(ex!.FilePath, Is.EqualTo(p));
        Assert.That(ex.Message, Does.StartWith(p).And.Contain(problem));
    }

    [Test]
    public void ShardedCheckpointsResolveNamesThroughTheIndex()
    {
        using var s = Tensor.NewScope();
        SafeTensorsWriter.Save(Path.Combine(_dir, "model-00001-of-00002.safetensors"), new Dictionary<string, Tensor> { ["a"] = Tensor.Ones([2]) });
        SafeTensorsWriter.Save(Path.Combine(_dir, "model-00002-of-00002.safetensors"), new Dictionary<string, Tensor> { ["b"] = Tensor.Full([3], 2) });
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"),
            "{\"metadata\":{\"total_size\":20},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}}");
        using var ckpt = SafeTensorsCheckpoint.Open(_dir);
        Assert.That(ckpt.Names, Is.EqualTo(new[] { "a", "b" }));
        Assert.That(ckpt.Load("b").ToArray<float>(), Is.EqualTo(new float[] { 2, 2, 2 }));
        Assert.Throws<KeyNotFoundException>(() => ckpt.Load("c"));
    }

    [Test]
    public void AnIndexNamingAMissingShardIsRejected()
    {
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), "{\"weight_map\":{\"a\":\"gone.safetensors\"}}");
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_dir));
        Assert.That(ex!.Message, Does.Contain("gone.safetensors"));
    }

    [Test]
    public void AFailedSaveLeavesThePreviousFileIntactAndNoTempFiles()
    {
        using var s = Tensor.NewScope();
        var p = Path.Combine(_dir, "keep.safetensors");
        SafeTensorsWriter.Save(p, new Dictionary<string, Tensor> { ["a"] = Tensor.Ones([2]) });
        var before = File.ReadAllBytes(p);
        var disposed = Tensor.Ones([3]);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => SafeTensorsWriter.Save(p, new Dictionary<string, Tensor> { ["a"] = Tensor.Ones([2]), ["z"] = disposed }));
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(p, stream => { stream.WriteByte(1); throw new InvalidOperationException("crash mid-write"); }));
        Assert.That(File.ReadAllBytes(p), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { p }));
    }
}
