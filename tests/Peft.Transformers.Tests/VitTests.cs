using Peft.Transformers;
using Peft.Transformers.Vit;

namespace Peft.Transformers.Tests;

[TestFixture]
public class VitTests
{
    private const string Json = """
        {"model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": 8, "patch_size": 4, "num_channels": 3,
         "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 24, "num_labels": 3}
        """;

    [Test]
    public void PatchProjectionEqualsANaiveStridedConvolution()
    {
        using var scope = Tensor.NewScope();
        using var conv = new Conv2dPatch(3, 5, 4, 0.5);
        var x = Tensor.Randn([2, 3, 8, 12], 1);
        var y = conv.Forward(x).ToFloatArray(); // [2, 2·3 patches, 5]
        var w = conv.Parameter("weight").ToFloatArray();
        var bias = conv.Parameter("bias").ToFloatArray();
        var px = x.ToFloatArray();
        for (int b = 0; b < 2; b++)
            for (int ph = 0; ph < 2; ph++)
                for (int pw = 0; pw < 3; pw++)
                    for (int o = 0; o < 5; o++)
                    {
                        double s = bias[o];
                        for (int c = 0; c < 3; c++)
                            for (int i = 0; i < 4; i++)
                                for (int j = 0; j < 4; j++)
                                    s += w[((o * 3 + c) * 4 + i) * 4 + j] * px[((b * 3 + c) * 8 + ph * 4 + i) * 12 + pw * 4 + j];
                        Assert.That(y[(b * 6 + ph * 3 + pw) * 5 + o], Is.EqualTo(s).Within(1e-4));
                    }
    }

    [Test]
    public void SaveLoadIsExactAndGradientsMatchFiniteDifferences()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = TinyModels.Create(Json);
            Assert.That(model, Is.InstanceOf<VitForImageClassification>());
            model.Eval();
            var pixels = Tensor.Randn([2, 3, 8, 8], 5);
            var expected = model.Forward(pixels).Logits.ToArray<float>();
            model.SavePretrained(dir);
            using (var loaded = AutoModel.FromPretrained(dir))
                Assert.That(loaded.Forward(pixels).Logits.ToArray<float>(), Is.EqualTo(expected));
            Assert.That(model.StateDict().Keys, Does.Contain("vit.encoder.layer.1.attention.attention.query.weight")
                .And.Contain("vit.embeddings.patch_embeddings.projection.weight").And.Contain("vit.layernorm.bias"));

            model.ToDType(DType.F64);
            var px = pixels.To(DType.F64);
            var labels = Tensor.FromArray(new long[] { 2, 0 });
            SampledGradCheck.Run(model, () => model.Forward(px, labels: labels).Loss!, seed: 1);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void WrongImageSizeIsAClearError()
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(Json);
        var ex = Assert.Throws<ShapeMismatchException>(() => model.Forward(Tensor.Zeros([1, 3, 16, 16])));
        Assert.That(ex!.Message, Does.Contain("[B, 3, 8, 8]").And.Contain("[1, 3, 16, 16]"));
    }
}
