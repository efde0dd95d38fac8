using Peft.Core;
using Peft.Core.Random;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>Image classification with LoRA on a ViT-shaped model: noisy 8×8 images of horizontal (0) or vertical (1)
/// stripes, LoRA on query and value, the classifier trained as a modules_to_save copy.</summary>
internal static class ImageClassification
{
    private const string Config = """
        {"model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": 8, "patch_size": 4, "num_channels": 3,
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": 2}
        """;

    private static (float[] Pixels, int Label) Image(Generator rng, int label)
    {
        using var noise = Tensor.Randn([3, 8, 8], rng);
        var px = noise.ToFloatArray();
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    px[(c * 8 + y) * 8 + x] = 0.5f * px[(c * 8 + y) * 8 + x] + ((label == 0 ? y : x) % 2 == 0 ? 1f : -1f);
        return (px, label);
    }

    public static bool Run(TextWriter o, int epochs)
    {
        var rng = new Generator(9);
        var (train, eval) = ExampleKit.Split(Enumerable.Range(0, 48).Select(i => Image(rng, i % 2)).ToList());
        using var peft = PeftModel.Create(ExampleKit.Model(Config, ModelTask.ImageClassification),
            new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["query", "value"], ModulesToSave = ["classifier"] });
        Tensor Pixels(IReadOnlyList<(float[] Pixels, int Label)> rows) => Tensor.FromArray(rows.SelectMany(r => r.Pixels).ToArray(), [rows.Count, 3, 8, 8]);
        double Accuracy()
        {
            using var _ = Autograd.NoGrad();
            using var scope = Tensor.NewScope();
            var predicted = ExampleKit.ArgMax(peft.Forward(Pixels(eval)).Logits);
            return predicted.Zip(eval).Count(p => p.First == p.Second.Label) / (double)eval.Count;
        }
        double before = Accuracy();
        var batches = train.Chunk(12).Select(chunk => (Func<Tensor>)(() =>
            peft.Forward(Pixels(chunk), labels: Tensor.FromArray(chunk.Select(c => (long)c.Label).ToArray())).Loss!)).ToList();
        bool ok = ExampleKit.Report(o, "LoRA image classification (ViT)", ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 20, lr: 5e-3));
        o.WriteLine($"  {peft.TrainableParametersLine()}; held-out accuracy {before:P0} → {Accuracy():P0}");
        return ok;
    }
}
