using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Nn.Tests;

/// <summary>A two-layer MLP with an output head tied to its input projection's weight, named like HF modules.</summary>
internal sealed class TinyMlp : Module
{
    public TinyMlp(bool tie = false)
    {
        RegisterModule("fc1", new Linear(4, 4, generator: new Generator(1)));
        RegisterModule("drop", new Dropout(0.5, new Generator(2)));
        RegisterModule("fc2", new Linear(4, 4, bias: false, generator: new Generator(3)));
        if (tie) Child<Linear>("fc2").SetParameter("weight", Child<Linear>("fc1").Weight);
    }

    public Tensor Forward(Tensor x)
    {
        using var h = Child<IUnaryModule>("fc1").Forward(x);
        using var a = h.Relu();
        using var d = Child<IUnaryModule>("drop").Forward(a);
        return Child<IUnaryModule>("fc2").Forward(d);
    }
}

[TestFixture]
public class ModuleTests
{
    [Test]
    public void NamesFollowTheModuleTreeInRegistrationOrder()
    {
        using var m = new TinyMlp();
        Assert.That(m.NamedParameters().Select(p => p.Name), Is.EqualTo(new[] { "fc1.weight", "fc1.bias", "fc2.weight" }));
        Assert.That(m.NamedModules().Select(p => p.Name), Is.EqualTo(new[] { "", "fc1", "drop", "fc2" }));
        Assert.That(m.CountParameters(), Is.EqualTo(16 + 4 + 16));
        Assert.That(m.Parameters(), Has.All.Property(nameof(Tensor.RequiresGrad)).True);
    }

    [Test]
    public void TiedParametersAppearOnceButEveryPathIsInTheStateDict()
    {
        using var m = new TinyMlp(tie: true);
        Assert.That(m.NamedParameters().Select(p => p.Name), Is.EqualTo(new[] { "fc1.weight", "fc1.bias" }));
        Assert.That(m.StateDict().Keys, Is.EquivalentTo(new[] { "fc1.weight", "fc1.bias", "fc2.weight" }));
        Assert.That(m.StateDict()["fc2.weight"], Is.SameAs(m.StateDict()["fc1.weight"]));
    }

    [Test]
    public void SetSubmoduleReplacesTheLayerTheParentRuns()
    {
        using var m = new TinyMlp();
        m.Eval();
        using var scope = Tensor.NewScope();
        var x = Tensor.Randn([2, 4], 5);
        var before = m.Forward(x).ToArray<float>();
        var old = m.SetSubmodule("fc2", new Linear(4, 4, generator: new Generator(99)));
        Assert.That(old, Is.InstanceOf<Linear>());
        Assert.That(m.Forward(x).ToArray<float>(), Is.Not.EqualTo(before));
        Assert.That(m.GetSubmodule("fc2"), Is.Not.SameAs(old));
        old.Dispose();
    }

    [Test]
    public void StateDictRoundTripsAndStrictLoadingListsEveryProblem()
    {
        using var a = new TinyMlp();
        using var b = new TinyMlp();
        using (Autograd.NoGrad()) b.GetSubmodule("fc1").Parameter("bias").FillInPlace(7);
        b.LoadStateDict(a.StateDict());
        Assert.That(b.GetSubmodule("fc1").Parameter("bias").ToArray<float>(), Is.EqualTo(a.GetSubmodule("fc1").Parameter("bias").ToArray<float>()));

        using var scope = Tensor.NewScope();
        var bad = new Dictionary<string, Tensor>(a.StateDict());
        bad.Remove("fc1.bias");
        bad["extra.weight"] = Tensor.Zeros([1]);
        var ex = Assert.Throws<StateDictException>(() => b.LoadStateDict(bad));
        Assert.That(ex!.MissingKeys, Is.EqualTo(new[] { "fc1.bias" }));
        Assert.That(ex.UnexpectedKeys, Is.EqualTo(new[] { "extra.weight" }));
        Assert.That(ex.Message, Does.Contain("fc1.bias").And.Contain("extra.weight"));

        var nonStrict = b.LoadStateDict(bad, strict: false);
        Assert.That(nonStrict.MissingKeys, Is.EqualTo(new[] { "fc1.bias" }));

        bad = new Dictionary<string, Tensor>(a.StateDict()) { ["fc2.weight"] = Tensor.Zeros([4, 5]) };
        var shape = Assert.Throws<StateDictException>(() => b.LoadStateDict(bad, strict: false));
        Assert.That(shape!.Message, Does.Contain("fc2.weight: model has [4, 4], checkpoint has [4, 5]"));
    }

    [Test]
    public void AssignAdoptsTensorsWithoutCopyingAndKeepsTiesTied()
    {
        using var m = new TinyMlp(tie: true);
        using var scope = Tensor.NewScope();
        var w = Tensor.Randn([4, 4], 11);
        var state = new Dictionary<string, Tensor> { ["fc1.weight"] = w, ["fc1.bias"] = Tensor.Zeros([4]) };
        StateDictLoader.Load(m, new DictionaryStateSource(state), strict: true, assign: true);
        var fc1 = m.GetSubmodule("fc1").Parameter("weight");
        Assert.That(fc1.Storage, Is.SameAs(w.Storage), "assign shares memory with the source");
        Assert.That(m.GetSubmodule("fc2").Parameter("weight"), Is.SameAs(fc1), "the tie survives loading");
        Assert.That(fc1.RequiresGrad);
    }

    [Test]
    public void TrainAndEvalSwitchDropout()
    {
        using var m = new TinyMlp();
        using var scope = Tensor.NewScope();
        var x = Tensor.Ones([3, 4]);
        m.Eval();
        var e1 = m.Forward(x).ToArray<float>();
        Assert.That(m.Forward(x).ToArray<float>(), Is.EqualTo(e1));
        m.Train();
        Assert.That(m.NamedModules().All(p => p.Module.IsTraining));
        Assert.That(m.Forward(x).ToArray<float>(), Is.Not.EqualTo(e1));
    }

    [Test]
    public void FrozenParametersGetNoGradient()
    {
        using var m = new TinyMlp();
        m.Eval();
        m.GetSubmodule("fc1").Parameter("weight").RequiresGrad = false;
        using var scope = Tensor.NewScope();
        m.Forward(Tensor.Randn([2, 4], 3)).Sum().Backward();
        Assert.That(m.GetSubmodule("fc1").Parameter("weight").Grad, Is.Null);
        Assert.That(m.GetSubmodule("fc1").Parameter("bias").Grad, Is.Not.Null);
        Assert.That(m.CountParameters(trainableOnly: true), Is.EqualTo(4 + 16));
        m.ZeroGrad();
        Assert.That(m.Parameters().All(p => p.Grad == null));
    }

    [Test]
    public void ToDTypeConvertsAndKeepsTies()
    {
        using var m = new TinyMlp(tie: true);
        m.ToDType(DType.F64);
        Assert.That(m.Parameters().Select(p => p.DType), Is.All.EqualTo(DType.F64));
        Assert.That(m.GetSubmodule("fc2").Parameter("weight"), Is.SameAs(m.GetSubmodule("fc1").Parameter("weight")));
        Assert.That(m.Parameters(), Has.All.Property(nameof(Tensor.RequiresGrad)).True);
    }

    [Test]
    public void DisposingAModuleFreesItsParameters()
    {
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); // earlier tests' garbage must not move the baseline
        long before = MemoryStats.LiveBytes;
        var m = new TinyMlp(tie: true);
        Assert.That(MemoryStats.LiveBytes, Is.GreaterThan(before));
        m.Dispose();
        Assert.That(MemoryStats.LiveBytes, Is.EqualTo(before));
    }
}

[TestFixture]
public class LayerTests
{
    [Test]
    public void LinearAndConv1DComputeTheirDefinitions()
    {
        using var scope = Tensor.NewScope();
        using var lin = new Linear(3, 2, generator: new Generator(4));
        var x = Tensor.Randn([5, 3], 6);
        var expected = x.MatMul(lin.Weight.Transpose(0, 1)) + lin.Bias!;
        Assert.That(lin.Forward(x).ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-6));
        double bound = 1 / Math.Sqrt(3);
        Assert.That(lin.Weight.ToArray<float>(), Has.All.InRange(-bound, bound));

        using var conv = new Conv1D(2, 3, generator: new Generator(5));
        Assert.That(conv.Weight.Shape, Is.EqualTo(new[] { 3, 2 }), "GPT-2 stores [in, out]");
        Assert.That(conv.Forward(x).ToArray<float>(), Is.EqualTo((x.MatMul(conv.Weight) + conv.Bias).ToArray<float>()).Within(1e-6));
    }

    [Test]
    public void ModuleListNamesChildrenByIndex()
    {
        using var list = new ModuleList<Linear>([new Linear(2, 2), new Linear(2, 2)]);
        Assert.That(list.NamedParameters().Select(p => p.Name), Is.EqualTo(new[] { "0.weight", "0.bias", "1.weight", "1.bias" }));
        Assert.That(list.Count, Is.EqualTo(2));
    }
}
