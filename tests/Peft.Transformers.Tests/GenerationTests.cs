using Peft.Core.Random;
using Peft.Transformers;

namespace Peft.Transformers.Tests;

[TestFixture]
public class GenerationTests
{
    public static IEnumerable<string> Architectures() => [TinyModels.Gpt2Json, TinyModels.LlamaJson];

    [TestCaseSource(nameof(Architectures))]
    public void GreedyDecodingWithTheCacheEqualsArgmaxOfTheFullForward(string json)
    {
        using var model = TinyModels.Create(json);
        using var scope = Tensor.NewScope();
        var prompt = TinyModels.Ids(new[,] { { 3, 9, 4 }, { 7, 7, 1 } });
        var generated = TextGeneration.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 6 });
        Assert.That(generated.Select(g => g.Length), Is.All.EqualTo(6));
        // Reference: re-run the whole sequence without a cache at every step.
        for (int row = 0; row < 2; row++)
        {
            var seq = prompt.Select(0, row).ToArray<long>().ToList();
            foreach (var token in generated[row])
            {
                using (Autograd.NoGrad())
                {
                    var logits = model.Forward(Tensor.FromArray(seq.ToArray(), [1, seq.Count])).Logits;
                    var last = logits.Select(1, seq.Count - 1).ToFloatArray();
                    Assert.That(token, Is.EqualTo(Array.IndexOf(last, last.Max())));
                }
                seq.Add(token);
            }
        }
    }

    [Test]
    public void GenerationStopsAtEosAndPadsFinishedRows()
    {
        using var model = TinyModels.Create(TinyModels.Gpt2Json);
        using var scope = Tensor.NewScope();
        var prompt = TinyModels.Ids(new[,] { { 3, 9, 4 } });
        var free = TextGeneration.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 5 })[0];
        var stopped = TextGeneration.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 5, EosTokenIds = [free[1]] })[0];
        Assert.That(stopped, Is.EqualTo(free.Take(Array.IndexOf(free, free[1]) + 1).ToArray()));
    }

    [Test]
    public void SamplingIsReproducibleFromItsSeedAndTopKOneIsGreedy()
    {
        using var model = TinyModels.Create(TinyModels.LlamaJson);
        using var scope = Tensor.NewScope();
        var prompt = TinyModels.Ids(new[,] { { 5, 6 } });
        GenerationOptions Sampling(ulong seed, int topK = 0, double topP = 1) => new()
        {
            MaxNewTokens = 8, DoSample = true, Temperature = 1.5, TopK = topK, TopP = topP, Generator = new Generator(seed),
        };
        var a = TextGeneration.Generate(model, prompt, Sampling(1))[0];
        Assert.That(TextGeneration.Generate(model, prompt, Sampling(1))[0], Is.EqualTo(a));
        var greedy = TextGeneration.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 8 })[0];
        Assert.That(TextGeneration.Generate(model, prompt, Sampling(2, topK: 1))[0], Is.EqualTo(greedy));
        Assert.That(TextGeneration.Generate(model, prompt, Sampling(3, topP: 1e-9))[0], Is.EqualTo(greedy));
        var others = Enumerable.Range(10, 5).Select(s => TextGeneration.Generate(model, prompt, Sampling((ulong)s))[0]).ToList();
        Assert.That(others.Any(o => !o.SequenceEqual(a)), "different seeds give different samples");
    }

    [Test]
    public void TopPKeepsOnlyTheNucleus()
    {
        float[] logits = [0f, 5f, 4.9f, -3f]; // p ≈ [0.004, 0.52, 0.47, 0.0003]
        var o = new GenerationOptions { DoSample = true, TopP = 0.9 };
        var seen = Enumerable.Range(0, 200).Select(i => TextGeneration.Sample(logits, o, new Generator((ulong)i))).ToHashSet();
        Assert.That(seen, Is.EquivalentTo(new[] { 1, 2 }));
    }
}
