using Peft.Core;

namespace Peft.Nn;

/// <summary>A module that maps one tensor to one tensor (layers PEFT can wrap: Linear, Conv1D, Embedding, norms).</summary>
public interface IUnaryModule
{
    /// <summary>Applies the module.</summary>
    Tensor Forward(Tensor input);
}

/// <summary>
/// A node of a model: named parameters, buffers and child modules, in registration order. Dotted paths
/// (<c>transformer.h.0.attn.c_attn.weight</c>) equal Hugging Face state-dict keys. Parents look their children up by
/// name when they run, so <see cref="SetSubmodule"/> can replace a layer (how PEFT injects adapters).
/// Parameters are owned by their module and freed by <see cref="Dispose"/>; they live outside tensor scopes.
/// </summary>
/// <example><code>
/// var model = new MyMlp();
/// foreach (var (name, p) in model.NamedParameters()) Console.WriteLine($"{name} {Shapes.Format(p.Shape)}");
/// model.LoadStateDict(weights);   // throws StateDictException listing missing/unexpected/mis-shaped keys
/// </code></example>
public abstract class Module : IDisposable
{
    // Not readonly: DeepCopy gives the copy its own collections after MemberwiseClone.
    private List<string> _paramOrder = new();
    private Dictionary<string, Tensor> _params = new();
    private List<string> _bufferOrder = new();
    private Dictionary<string, (Tensor Tensor, bool Persistent)> _buffers = new();
    private List<string> _childOrder = new();
    private Dictionary<string, Module> _children = new();
    private bool _disposed;

    [ThreadStatic] private static List<Module>? _underConstruction;

    /// <summary>Notes the module in the innermost <see cref="Build{T}"/> on this thread, so a failed build frees it.</summary>
    protected Module() => _underConstruction?.Add(this);

    /// <summary>
    /// Runs a constructor of a module tree such that a failure part-way (a bad config value, a model too large for
    /// memory) frees every module the attempt created — with their parameters — before the exception propagates;
    /// without it, tensors of a half-built tree would wait for the garbage collector.
    /// </summary>
    /// <example><code>var model = Module.Build(() => new LlamaForCausalLM(config));</code></example>
    public static T Build<T>(Func<T> construct) where T : Module
    {
        var outer = _underConstruction;
        var created = new List<Module>();
        _underConstruction = created;
        try { return construct(); }
        catch
        {
            foreach (var m in created) m.Dispose();
            created.Clear();
            throw;
        }
        finally
        {
            _underConstruction = outer;
            outer?.AddRange(created);   // a nested build that succeeded belongs to the enclosing one
        }
    }

    /// <summary>True in training mode (dropout active), false after <see cref="Eval"/>.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>Registers (or replaces) a parameter. The module takes ownership; it requires grad unless it is an
    /// integer tensor.</summary>
    protected Tensor RegisterParameter(string name, Tensor value, bool requiresGrad = true)
    {
        CheckName(name);
        value.KeepAlive();
        if (requiresGrad && value.DType.IsFloatingPoint() && value.GradFn == null) value.RequiresGrad = true;
        if (!_params.ContainsKey(name)) _paramOrder.Add(name);
        _params[name] = value;
        return value;
    }

    /// <summary>Registers a buffer (state that is not trained, e.g. rotary tables). Non-persistent buffers are left
    /// out of <see cref="StateDict"/>, as in PyTorch.</summary>
    protected Tensor RegisterBuffer(string name, Tensor value, bool persistent = true)
    {
        CheckName(name);
        value.KeepAlive();
        if (!_buffers.ContainsKey(name)) _bufferOrder.Add(name);
        _buffers[name] = (value, persistent);
        return value;
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        CheckName(name);
        if (!_children.ContainsKey(name)) _childOrder.Add(name);
        _children[name] = module;
        return module;
    }

    private static void CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new ArgumentException($"module member names must be non-empty and contain no '.', got '{name}'");
    }

    /// <summary>The child registered as <paramref name="name"/>, as <typeparamref name="T"/>.</summary>
    protected T Child<T>(string name) where T : class =>
        _children.TryGetValue(name, out var m) ? m as T ?? throw new InvalidCastException($"{GetType().Name}.{name} is a {m.GetType().Name}, not a {typeof(T).Name}")
        : throw new KeyNotFoundException($"{GetType().Name} has no child '{name}'");

    /// <summary>Whether this module itself registered a parameter named <paramref name="name"/>.</summary>
    protected bool HasParameter(string name) => _params.ContainsKey(name);

    /// <summary>Whether this module has a direct child named <paramref name="name"/>.</summary>
    protected bool HasChild(string name) => _children.ContainsKey(name);

    /// <summary>The parameter registered as <paramref name="name"/> on this module.</summary>
    public Tensor Parameter(string name) => _params.TryGetValue(name, out var p) ? p
        : throw new KeyNotFoundException($"{GetType().Name} has no parameter '{name}'");

    /// <summary>Replaces the tensor of an existing parameter (e.g. tying an output head to the embedding). The
    /// module owned the replaced tensor, so it is disposed.</summary>
    public void SetParameter(string name, Tensor value)
    {
        if (!_params.TryGetValue(name, out var old)) throw new KeyNotFoundException($"{GetType().Name} has no parameter '{name}'");
        _params[name] = value.KeepAlive();
        if (!ReferenceEquals(old, value)) old.Dispose();
    }

    /// <summary>The buffer registered as <paramref name="name"/> on this module.</summary>
    public Tensor Buffer(string name) => _buffers.TryGetValue(name, out var b) ? b.Tensor
        : throw new KeyNotFoundException($"{GetType().Name} has no buffer '{name}'");

    /// <summary>Direct children in registration order.</summary>
    public IEnumerable<(string Name, Module Module)> NamedChildren() => _childOrder.Select(n => (n, _children[n]));

    /// <summary>This module and every descendant with its dotted path ("" for this one), depth first.</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        var stack = new Stack<(string, Module)>();
        stack.Push((prefix, this));
        while (stack.Count > 0)
        {
            var (path, m) = stack.Pop();
            yield return (path, m);
            for (int i = m._childOrder.Count - 1; i >= 0; i--)
            {
                var n = m._childOrder[i];
                stack.Push((Join(path, n), m._children[n]));
            }
        }
    }

    /// <summary>Every parameter with its dotted path; a tensor shared by two modules (tied weights) appears once,
    /// under its first path, as torch's named_parameters does.</summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (path, m) in NamedModules())
            foreach (var n in m._paramOrder)
                if (seen.Add(m._params[n])) yield return (Join(path, n), m._params[n]);
    }

    /// <summary>Every distinct parameter.</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Parameter);

    /// <summary>Every buffer with its dotted path.</summary>
    public IEnumerable<(string Name, Tensor Buffer, bool Persistent)> NamedBuffers()
    {
        foreach (var (path, m) in NamedModules())
            foreach (var n in m._bufferOrder)
                yield return (Join(path, n), m._buffers[n].Tensor, m._buffers[n].Persistent);
    }

    /// <summary>Number of parameter elements (distinct tensors), optionally only those that require grad.</summary>
    public long CountParameters(bool trainableOnly = false) =>
        Parameters().Where(p => !trainableOnly || p.RequiresGrad).Sum(p => p.NumEl);

    /// <summary>
    /// Parameters and persistent buffers by dotted path — every path, tied ones included (as torch's state_dict).
    /// The tensors are the module's own: do not dispose them.
    /// </summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (path, m) in NamedModules())
            foreach (var (n, t, _) in m.OwnTensors()) d[Join(path, n)] = t;
        return d;
    }

    /// <summary>The module at dotted <paramref name="path"/> ("" is this module).</summary>
    public Module GetSubmodule(string path)
    {
        Module m = this;
        if (path.Length == 0) return m;
        foreach (var part in path.Split('.'))
            m = m._children.TryGetValue(part, out var c) ? c : throw new KeyNotFoundException($"no module at '{path}' (missing '{part}')");
        return m;
    }

    /// <summary>Replaces the module at dotted <paramref name="path"/> and returns the one it replaced.</summary>
    public Module SetSubmodule(string path, Module replacement)
    {
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? this : GetSubmodule(path[..dot]);
        var name = dot < 0 ? path : path[(dot + 1)..];
        if (!parent._children.TryGetValue(name, out var old)) throw new KeyNotFoundException($"no module at '{path}'");
        parent._children[name] = replacement;
        return old;
    }

    /// <summary>Training mode for this module and all descendants.</summary>
    public Module Train(bool on = true)
    {
        foreach (var (_, m) in NamedModules()) m.IsTraining = on;
        return this;
    }

    /// <summary>Evaluation mode (dropout off).</summary>
    public Module Eval() => Train(false);

    /// <summary>Sets RequiresGrad on every parameter (false freezes the whole model).</summary>
    public void RequiresGrad(bool on)
    {
        foreach (var p in Parameters()) if (p.DType.IsFloatingPoint()) p.RequiresGrad = on;
    }

    /// <summary>Converts every floating-point parameter and buffer to <paramref name="dtype"/> in place (tied tensors
    /// stay tied; RequiresGrad is kept). Returns this module.</summary>
    public Module ToDType(DType dtype) => ToDType(dtype, (_, _, _) => true);

    /// <summary>Converts the floating-point parameters and buffers that <paramref name="which"/> selects (given the
    /// owning module, the member name and the tensor) to <paramref name="dtype"/> in place; a tensor shared by several
    /// modules is converted once, for all of them, when any selects it. Returns this module.</summary>
    public Module ToDType(DType dtype, Func<Module, string, Tensor, bool> which)
    {
        if (!dtype.IsFloatingPoint()) throw new ArgumentException($"ToDType needs a floating-point dtype, got {dtype}");
        return Replace((m, n, t) => t.DType.IsFloatingPoint() && t.DType != dtype && which(m, n, t), t => t.To(dtype));
    }

    /// <summary>
    /// Moves every parameter and buffer to <paramref name="device"/> in place (torch's <c>module.to(device)</c>): tied
    /// tensors stay tied, RequiresGrad is kept, gradients are dropped. Moving to a CUDA device needs the Peft.Cuda
    /// package. Returns this module.
    /// </summary>
    /// <example><code>model.To(Device.Cuda(0));
    /// using var logits = model.Forward(ids.To(Device.Cuda(0)));</code></example>
    public Module To(Device device) => Replace((_, _, t) => t.Device != device, t => t.To(device));

    /// <summary>Replaces the parameters and buffers that <paramref name="which"/> selects (given the owning module, the
    /// member name and the tensor) by <paramref name="convert"/>(tensor); a tensor shared by several modules is converted
    /// once, for all of them, when any selects it, and the replaced tensors are disposed.</summary>
    private Module Replace(Func<Module, string, Tensor, bool> which, Func<Tensor, Tensor> convert)
    {
        var converted = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        var selected = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (_, m) in NamedModules())
        {
            foreach (var n in m._paramOrder) if (which(m, n, m._params[n])) selected.Add(m._params[n]);
            foreach (var n in m._bufferOrder) if (which(m, n, m._buffers[n].Tensor)) selected.Add(m._buffers[n].Tensor);
        }
        using var _ = Autograd.NoGrad();
        try
        {
            foreach (var (_, m) in NamedModules())
            {
                foreach (var n in m._paramOrder.ToList()) if (selected.Contains(m._params[n])) m._params[n] = Convert(m._params[n]);
                foreach (var n in m._bufferOrder.ToList())
                    if (selected.Contains(m._buffers[n].Tensor)) m._buffers[n] = (Convert(m._buffers[n].Tensor), m._buffers[n].Persistent);
            }
        }
        finally
        {
            foreach (var (old, now) in converted) if (!ReferenceEquals(old, now)) old.Dispose();
        }
        return this;

        Tensor Convert(Tensor t)
        {
            if (converted.TryGetValue(t, out var done)) return done;
            var c = convert(t).KeepAlive();
            c.RequiresGrad = t.RequiresGrad;
            return converted[t] = c;
        }
    }

    /// <summary>Clears the gradients of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.ZeroGrad();
    }

    /// <summary>Removes and disposes a parameter of this module.</summary>
    protected void RemoveParameter(string name)
    {
        if (!_params.Remove(name, out var p)) throw new KeyNotFoundException($"{GetType().Name} has no parameter '{name}'");
        _paramOrder.Remove(name);
        p.Dispose();
    }

    /// <summary>Removes and disposes a buffer.</summary>
    protected void RemoveBuffer(string name)
    {
        if (!_buffers.Remove(name, out var b)) throw new KeyNotFoundException($"{GetType().Name} has no buffer '{name}'");
        _bufferOrder.Remove(name);
        b.Tensor.Dispose();
    }

    /// <summary>True when a buffer named <paramref name="name"/> is registered.</summary>
    protected bool HasBuffer(string name) => _buffers.ContainsKey(name);

    /// <summary>Removes a child module (returned, not disposed).</summary>
    protected Module RemoveModule(string name)
    {
        if (!_children.Remove(name, out var m)) throw new KeyNotFoundException($"{GetType().Name} has no child '{name}'");
        _childOrder.Remove(name);
        return m;
    }

    /// <summary>
    /// An independent copy of this module tree with its own parameter memory (RequiresGrad kept; tensors tied inside
    /// the tree stay tied in the copy). Modules find their children by name, so a member-wise clone plus fresh
    /// collections is a complete copy.
    /// </summary>
    public Module DeepCopy() => DeepCopy(new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance));

    private Module DeepCopy(Dictionary<Tensor, Tensor> copied)
    {
        var copy = (Module)MemberwiseClone();
        copy._disposed = false;
        copy._paramOrder = new List<string>(_paramOrder);
        copy._bufferOrder = new List<string>(_bufferOrder);
        copy._childOrder = new List<string>(_childOrder);
        copy._params = _params.ToDictionary(kv => kv.Key, kv => Copy(kv.Value));
        copy._buffers = _buffers.ToDictionary(kv => kv.Key, kv => (Copy(kv.Value.Tensor), kv.Value.Persistent));
        copy._children = _children.ToDictionary(kv => kv.Key, kv => kv.Value.DeepCopy(copied));
        return copy;

        Tensor Copy(Tensor t)
        {
            if (copied.TryGetValue(t, out var done)) return done;
            Tensor c;
            using (Autograd.NoGrad()) c = t.Clone().KeepAlive();
            if (t.RequiresGrad) c.RequiresGrad = true;
            return copied[t] = c;
        }
    }

    /// <summary>Frees every parameter and buffer of this module and its descendants.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var c in _children.Values) c.Dispose();
        foreach (var p in _params.Values) p.Dispose();
        foreach (var b in _buffers.Values) b.Tensor.Dispose();
        DisposeOwnedState();
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees tensors a module holds outside its parameters and buffers (caches); called once by Dispose.</summary>
    protected virtual void DisposeOwnedState() { }

    internal static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;

    /// <summary>This module's own state-dict entries (parameters, then persistent buffers), for <see cref="StateDict"/>
    /// and <see cref="StateDictLoader"/>.</summary>
    internal IEnumerable<(string Name, Tensor Tensor, bool IsParameter)> OwnTensors() =>
        _paramOrder.Select(n => (n, _params[n], true)).Concat(_bufferOrder.Where(n => _buffers[n].Persistent).Select(n => (n, _buffers[n].Tensor, false)));

    internal void Replace(string name, bool isParameter, Tensor value)
    {
        if (isParameter) _params[name] = value.KeepAlive();
        else _buffers[name] = (value.KeepAlive(), true);
    }
}
