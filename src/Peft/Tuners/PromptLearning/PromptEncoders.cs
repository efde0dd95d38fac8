using Peft.Core;
using Peft.Nn;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// A prompt-learning adapter's trainable module (<c>prompt_encoder.&lt;a&gt;</c>): produces the virtual-token
/// embeddings [B, tokens, token_dim] or, for prefix tuning, the flat prefix [B, tokens, 2·layers·token_dim]. Every
/// encoder has an <c>embedding</c> (nn.Embedding) over the virtual-token indices, as PEFT.
/// </summary>
public abstract class PromptEncoder : Module
{
    /// <summary>Creates the encoder with its virtual-token embedding.</summary>
    protected PromptEncoder(int tokens, int width)
    {
        Tokens = tokens;
        RegisterModule("embedding", new Embedding(tokens, width, std: 1.0));   // nn.Embedding's N(0, 1)
    }

    /// <summary>Number of virtual tokens.</summary>
    public int Tokens { get; }

    /// <summary>The virtual-token embedding.</summary>
    public Embedding Embedding => Child<Embedding>("embedding");

    /// <summary>The output for one sample (batch 1) — what PEFT saves as <c>prompt_embeddings</c>.</summary>
    public Tensor Output(long[]? taskIds = null) => Forward(1, taskIds);

    /// <summary>The output for <paramref name="indices"/> [B, tokens].</summary>
    protected virtual Tensor Encode(Tensor indices, long[]? taskIds) => Embedding.Forward(indices);

    /// <summary>The output for a batch of <paramref name="batch"/> samples.</summary>
    public Tensor Forward(int batch, long[]? taskIds = null)
    {
        using var indices = Indices(batch);
        return Encode(indices, taskIds);
    }

    /// <summary>The virtual-token indices 0 … tokens − 1 for each of <paramref name="batch"/> samples.</summary>
    protected Tensor Indices(int batch)
    {
        var ids = new long[batch * Tokens];
        for (int i = 0; i < ids.Length; i++) ids[i] = i % Tokens;
        return Tensor.FromArray(ids, [batch, Tokens]);
    }
}

/// <summary>Prompt tuning's encoder (PEFT's PromptEmbedding): the embedding itself; also the inference form of every
/// method, whose <c>embedding.weight</c> holds the saved <c>prompt_embeddings</c>.</summary>
public sealed class PromptEmbedding(int tokens, int width) : PromptEncoder(tokens, width)
{
    /// <summary>TEXT init copies the init text's word embeddings; SAMPLE_VOCAB copies random vocabulary rows; RANDOM keeps N(0, 1).</summary>
    internal void Initialise(PromptTuningConfig config, PreTrainedModel model)
    {
        if (config.PromptTuningInit == "RANDOM") return;
        var words = model.InputEmbeddings ?? throw new NotSupportedException($"{model.ArchitectureName} exposes no input embeddings");
        long[] ids = config.PromptTuningInit == "TEXT"
            ? config.InitTokenIds(model, Tokens)
            : Tensor.Rand([Tokens]).ToFloatArray().Select(u => (long)(u * words.NumEmbeddings) % words.NumEmbeddings).ToArray();
        using var _ = Autograd.NoGrad();
        using var idx = Tensor.FromArray(ids);
        using var rows = words.Weight.Embedding(idx);
        Embedding.Weight.CopyFrom(rows);
    }
}

/// <summary>P-tuning's MLP encoder (PEFT's PromptEncoder, MLP type): embedding → Linear–ReLU–Linear–ReLU–Linear
/// (<c>mlp_head.0</c>, <c>.2</c>, <c>.4</c>).</summary>
public sealed class PTuningEncoder : PromptEncoder
{
    /// <summary>Creates the encoder.</summary>
    public PTuningEncoder(int tokens, int width, int hidden) : base(tokens, width)
    {
        var mlp = new ModuleList<Module>([new Linear(width, hidden), new Relu(), new Linear(hidden, hidden), new Relu(), new Linear(hidden, width)]);
        RegisterModule("mlp_head", mlp);
    }

    /// <inheritdoc/>
    protected override Tensor Encode(Tensor indices, long[]? taskIds)
    {
        var embedded = Embedding.Forward(indices);
        return Child<ModuleList<Module>>("mlp_head").Chain(embedded, (layer, x) => ((IUnaryModule)layer).Forward(x));
    }
}

/// <summary>P-tuning's LSTM reparameterisation (PEFT's PromptEncoder with encoder_reparameterization_type LSTM):
/// embedding → bidirectional LSTM (<c>lstm_head</c>) → Linear(2h, 2h)–ReLU–Linear(2h, token_dim) (<c>mlp_head.0</c>,
/// <c>.2</c>).</summary>
public sealed class PTuningLstmEncoder : PromptEncoder
{
    /// <summary>Creates the encoder.</summary>
    public PTuningLstmEncoder(int tokens, int width, int hidden, int layers, double dropout) : base(tokens, width)
    {
        RegisterModule("lstm_head", new Lstm(width, hidden, layers, bidirectional: true, dropout: dropout));
        RegisterModule("mlp_head", new ModuleList<Module>([new Linear(2 * hidden, 2 * hidden), new Relu(), new Linear(2 * hidden, width)]));
    }

    /// <inheritdoc/>
    protected override Tensor Encode(Tensor indices, long[]? taskIds)
    {
        using var embedded = Embedding.Forward(indices);
        var recurrent = Child<Lstm>("lstm_head").Forward(embedded);
        return Child<ModuleList<Module>>("mlp_head").Chain(recurrent, (layer, x) => ((IUnaryModule)layer).Forward(x));
    }
}

/// <summary>Prefix tuning's projection (PEFT's PrefixEncoder with prefix_projection): embedding of width token_dim →
/// Linear–Tanh–Linear (<c>transform.0</c>, <c>.2</c>) to 2·layers·token_dim.</summary>
public sealed class PrefixEncoder : PromptEncoder
{
    /// <summary>Creates the encoder.</summary>
    public PrefixEncoder(int tokens, int width, int hidden, int output) : base(tokens, width) =>
        RegisterModule("transform", new ModuleList<Module>([new Linear(width, hidden), new Tanh(), new Linear(hidden, output)]));

    /// <inheritdoc/>
    protected override Tensor Encode(Tensor indices, long[]? taskIds)
    {
        var embedded = Embedding.Forward(indices);
        return Child<ModuleList<Module>>("transform").Chain(embedded, (layer, x) => ((IUnaryModule)layer).Forward(x));
    }
}

/// <summary>Multitask prompt tuning's encoder (PEFT's MultitaskPromptEmbedding): embedding ⊙ (cols[task]·rows[task]).</summary>
public sealed class MultitaskPromptEmbedding : PromptEncoder
{
    /// <summary>Creates the encoder with N(0, 0.02) task matrices.</summary>
    public MultitaskPromptEmbedding(int tokens, int width, int tasks, int ranks) : base(tokens, width)
    {
        Tasks = tasks;
        RegisterParameter("prefix_task_cols", Tensor.Randn([tasks, tokens, ranks], null, DType.F32, 0, 0.02));
        RegisterParameter("prefix_task_rows", Tensor.Randn([tasks, ranks, width], null, DType.F32, 0, 0.02));
    }

    /// <summary>Number of tasks.</summary>
    public int Tasks { get; }

    /// <summary>TEXT init of the shared prompt (the task matrices stay random).</summary>
    internal void Initialise(PromptTuningConfig config, PreTrainedModel model)
    {
        var words = model.InputEmbeddings ?? throw new NotSupportedException($"{model.ArchitectureName} exposes no input embeddings");
        using var _ = Autograd.NoGrad();
        using var idx = Tensor.FromArray(config.InitTokenIds(model, Tokens));
        using var rows = words.Weight.Embedding(idx);
        Embedding.Weight.CopyFrom(rows);
    }

    /// <summary>The source-task inits (PEFT's MultitaskPromptEmbedding): the shared prompt from the source adapter's
    /// <c>prompt_embeddings</c>, and for AVERAGE_SOURCE_TASKS / EXACT_SOURCE_TASK the task matrices reduced to one task
    /// (the mean, or source task prompt_tuning_init_task), which must then fit this encoder exactly (PEFT loads them
    /// strictly, so its target has num_tasks = 1).</summary>
    internal void InitialiseFromSource(MultitaskPromptTuningConfig config)
    {
        var path = config.PromptTuningInitStateDictPath!;
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new NotSupportedException($"prompt_tuning_init_state_dict_path '{path}': only safetensors files are read here (a torch pickle cannot be); point it at the source adapter's adapter_model.safetensors");
        using var _ = Autograd.NoGrad();
        using var file = Peft.Core.SafeTensors.SafeTensorsFile.Open(path);
        Copy(file, path, "prompt_embeddings", Embedding.Weight, t => t.Contiguous());
        if (config.PromptTuningInit == "ONLY_SOURCE_SHARED") return;
        int task = config.PromptTuningInitTask;
        Tensor Reduce(Tensor t) => config.PromptTuningInit == "AVERAGE_SOURCE_TASKS"
            ? t.Mean(0, keepDim: true)
            : task >= 0 && task < t.Size(0) ? t.Narrow(0, task, 1).Contiguous()
            : throw new ArgumentOutOfRangeException(nameof(config), $"prompt_tuning_init_task {task} is not a task of '{path}' (it has {t.Size(0)})");
        Copy(file, path, "prefix_task_cols", Parameter("prefix_task_cols"), Reduce);
        Copy(file, path, "prefix_task_rows", Parameter("prefix_task_rows"), Reduce);
    }

    private static void Copy(Peft.Core.SafeTensors.SafeTensorsFile file, string path, string key, Tensor destination, Func<Tensor, Tensor> reduce)
    {
        if (!file.Contains(key)) throw new KeyNotFoundException($"'{path}' has no tensor '{key}' (a multitask prompt tuning adapter has prompt_embeddings, prefix_task_cols and prefix_task_rows)");
        using var loaded = file.Load(key);
        using var f32 = loaded.To(destination.DType);
        using var value = reduce(f32);
        if (!value.Shape.SequenceEqual(destination.Shape))
            throw new InvalidOperationException($"'{path}': tensor '{key}' gives {Shapes.Format(value.Shape)} but this adapter needs {Shapes.Format(destination.Shape)}");
        destination.CopyFrom(value);
    }

    /// <summary>The shared prompt only: PEFT saves the embedding's output as prompt_embeddings, the task matrices apart.</summary>
    public Tensor SharedPrompt()
    {
        using var indices = Indices(1);
        return Embedding.Forward(indices);
    }

    /// <inheritdoc/>
    protected override Tensor Encode(Tensor indices, long[]? taskIds)
    {
        int b = indices.Size(0);
        if (taskIds == null || taskIds.Length != b)
            throw new ArgumentException($"multitask prompt tuning needs one task id per sample ({b}), got {taskIds?.Length ?? 0}");
        if (taskIds.Any(t => t < 0 || t >= Tasks)) throw new ArgumentOutOfRangeException(nameof(taskIds), $"task ids must lie in [0, {Tasks})");
        using var prompt = Embedding.Forward(indices);                         // [B, tokens, d]
        using var ids = Tensor.FromArray(taskIds);
        using var cols = Parameter("prefix_task_cols").IndexSelect(0, ids);    // [B, tokens, R]
        using var rows = Parameter("prefix_task_rows").IndexSelect(0, ids);    // [B, R, d]
        using var task = cols.MatMul(rows);                                    // [B, tokens, d]
        return prompt.Mul(task);
    }
}
