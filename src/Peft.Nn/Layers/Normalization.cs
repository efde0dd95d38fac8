using Peft.Core;

namespace Peft.Nn;

/// <summary>LayerNorm over the last dim with weight (ones) and bias (zeros).</summary>
public sealed class LayerNorm : Module, IUnaryModule
{
    /// <summary>Creates the layer.</summary>
    public LayerNorm(int dim, double eps = 1e-5, bool bias = true, DType dtype = DType.F32)
    {
        Eps = eps;
        RegisterParameter("weight", Tensor.Ones([dim], dtype));
        if (bias) RegisterParameter("bias", Tensor.Zeros([dim], dtype));
        HasBias = bias;
    }

    /// <summary>Variance epsilon.</summary>
    public double Eps { get; }

    /// <summary>Whether a bias is added.</summary>
    public bool HasBias { get; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.LayerNorm(Parameter("weight"), HasBias ? Parameter("bias") : null, Eps);
}

/// <summary>RMSNorm over the last dim with weight (ones): LLaMA's and T5's norm.</summary>
public sealed class RmsNorm : Module, IUnaryModule
{
    /// <summary>Creates the layer.</summary>
    public RmsNorm(int dim, double eps = 1e-6, DType dtype = DType.F32)
    {
        Eps = eps;
        RegisterParameter("weight", Tensor.Ones([dim], dtype));
    }

    /// <summary>Variance epsilon.</summary>
    public double Eps { get; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.RmsNorm(Parameter("weight"), Eps);
}

/// <summary>Inverted dropout that is active only in training mode; masks come from <see cref="Generator"/>.</summary>
public sealed class Dropout(double p, Peft.Core.Random.Generator? generator = null) : Module, IUnaryModule
{
    /// <summary>Drop probability.</summary>
    public double P { get; } = p;

    /// <summary>The mask stream (the process default when null).</summary>
    public Peft.Core.Random.Generator? Generator { get; set; } = generator;

    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.Dropout(P, IsTraining, Generator);
}

/// <summary>A layer stack that can recompute its layers in backward instead of keeping their activations.</summary>
public interface IGradientCheckpointing
{
    /// <summary>Whether training-mode passes checkpoint each layer.</summary>
    bool GradientCheckpointing { get; set; }
}

/// <summary>Children named "0", "1", ... (torch.nn.ModuleList), as in <c>transformer.h.0</c>.</summary>
public sealed class ModuleList<T> : Module, IGradientCheckpointing where T : Module
{
    private readonly List<string> _names = new();

    /// <summary>Creates the list from <paramref name="items"/>.</summary>
    public ModuleList(IEnumerable<T> items)
    {
        foreach (var item in items) Add(item);
    }

    /// <summary>Appends a module.</summary>
    public void Add(T item)
    {
        var name = _names.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
        _names.Add(name);
        RegisterModule(name, item);
    }

    /// <summary>Number of modules.</summary>
    public int Count => _names.Count;

    /// <summary>Module <paramref name="index"/> (looked up by name, so replacements are seen).</summary>
    public T this[int index] => Child<T>(_names[index]);

    /// <summary>Recompute each module in backward instead of keeping its activations (transformers'
    /// gradient_checkpointing): applies in training mode to <see cref="Chain(Tensor, Func{T, int, Tensor, Tensor}, bool)"/>
    /// calls that allow it.</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>Runs the modules in order, each on the previous one's output (a transformer's layer stack);
    /// <paramref name="step"/> gets the module, its index and its input. Takes ownership of <paramref name="input"/>:
    /// each intermediate, the input included, is disposed once the next module has produced its output, or when a
    /// module throws. The caller owns the result (<paramref name="input"/> itself when the list is empty). With
    /// <see cref="GradientCheckpointing"/> on, in training, each step is a <see cref="Checkpoint"/> region unless
    /// <paramref name="checkpointable"/> is false (a step that reads trainable tensors from outside it, such as a
    /// key/value cache, cannot be recomputed on its own — transformers turns the cache off instead). A step that reads
    /// tensors other than its input must use the side-input overload: a recomputation runs after they would be freed.</summary>
    public Tensor Chain(Tensor input, Func<T, int, Tensor, Tensor> step, bool checkpointable = true) =>
        Chain(input, [], (m, i, x, _) => step(m, i, x), checkpointable);

    /// <summary><see cref="Chain(Tensor, Func{T, int, Tensor, Tensor}, bool)"/> for steps that also read
    /// <paramref name="sideInputs"/> (masks, rotary tables, an encoder output; nulls allowed): <paramref name="step"/>
    /// must read them from its last argument, so a checkpointed step's recomputation finds them alive and routes their
    /// gradients to the outer graph.</summary>
    public Tensor Chain(Tensor input, IReadOnlyList<Tensor?> sideInputs, Func<T, int, Tensor, IReadOnlyList<Tensor?>, Tensor> step, bool checkpointable = true)
    {
        var x = input;
        bool recompute = GradientCheckpointing && checkpointable && IsTraining;
        try
        {
            for (int i = 0; i < Count; i++)
            {
                var module = this[i];
                int index = i;
                var next = recompute
                    ? Checkpoint.Run((h, side) => step(module, index, h, side), x, sideInputs, module.Parameters().Where(p => p.RequiresGrad).ToList())
                    : step(module, i, x, sideInputs);
                x.Dispose();
                x = next;
            }
            return x;
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    /// <summary><see cref="Chain(Tensor, Func{T, int, Tensor, Tensor}, bool)"/> for modules that need no index.</summary>
    public Tensor Chain(Tensor input, Func<T, Tensor, Tensor> step, bool checkpointable = true) => Chain(input, (m, _, x) => step(m, x), checkpointable);
}
