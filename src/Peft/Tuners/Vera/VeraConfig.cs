using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's VeraConfig (<c>peft_type = "VERA"</c>): r = 256, projection_prng_key = 0, save_projection = true,
/// vera_dropout = 0, d_initial = 0.1, bias = "none". The shared projections are drawn here from this library's Philox
/// generator seeded with projection_prng_key; torch's generator cannot be replayed, so the projections are always saved
/// with the adapter (save_projection is forced to true) and always loaded from the file.
/// </summary>
/// <example><code>var config = new VeraConfig { R = 64, TargetModules = ["q_proj", "v_proj"] };</code></example>
public sealed class VeraConfig : TunerConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public VeraConfig() : base(new JsonObject
    {
        ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["bias"] = "none", ["d_initial"] = PythonJson.Float(0.1),
        ["fan_in_fan_out"] = false, ["inference_mode"] = false, ["init_weights"] = true, ["layers_pattern"] = null,
        ["layers_to_transform"] = null, ["modules_to_save"] = null, ["peft_type"] = "VERA", ["projection_prng_key"] = 0, ["r"] = 256,
        ["revision"] = null, ["save_projection"] = true, ["target_modules"] = null, ["task_type"] = null, ["vera_dropout"] = PythonJson.Float(0.0),
    }) { }

    internal VeraConfig(JsonObject json) : base(json) => Validate();

    /// <summary>Rank of the shared projections.</summary>
    public int R { get => (int)GetDouble("r", 256); set => Json["r"] = value; }

    /// <summary>Seed of the shared projections.</summary>
    public long ProjectionPrngKey { get => (long)GetDouble("projection_prng_key", 0); set => Json["projection_prng_key"] = value; }

    /// <summary>Dropout on the adapter's input.</summary>
    public double VeraDropout { get => GetDouble("vera_dropout", 0); set => Json["vera_dropout"] = PythonJson.Float(value); }

    /// <summary>Initial value of every λ_d.</summary>
    public double DInitial { get => GetDouble("d_initial", 0.1); set => Json["d_initial"] = PythonJson.Float(value); }

    /// <summary>True when the base layers store [in, out] weights (corrected to the layers found).</summary>
    public bool FanInFanOut { get => GetBool("fan_in_fan_out", false); set => Json["fan_in_fan_out"] = value; }

    /// <summary>"none", "all" or "vera_only": which biases train.</summary>
    public string Bias { get => GetString("bias") ?? "none"; set => Json["bias"] = value; }

    /// <summary>λ_b = 0 (a no-op at init); false: λ_b = 1, λ_d ~ N(0, 1).</summary>
    public bool InitWeights { get => GetBool("init_weights", true); set => Json["init_weights"] = value; }

    /// <summary>Always true here (see the class remarks); a file that says false cannot be loaded.</summary>
    public bool SaveProjection => GetBool("save_projection", true);

    /// <inheritdoc/>
    public override string Prefix => "vera_lambda_";

    internal override string BiasRule => Bias;

    /// <inheritdoc/>
    public override PeftConfig Clone() => new VeraConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateTargets();
        if (R <= 0) throw new InvalidOperationException($"r must be positive, got {R}");
        if (VeraDropout is < 0 or >= 1) throw new InvalidOperationException($"vera_dropout must be in [0, 1), got {VeraDropout}");
        if (Bias is not ("none" or "all" or "vera_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'vera_only', got '{Bias}'");
        if (!SaveProjection)
            throw new InvalidOperationException("save_projection is false: the adapter relies on torch's random generator to rebuild vera_A/vera_B, which Peft.Native cannot replay; re-save it in Python with save_projection=True");
    }

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new VeraLayer(baseLayer);

    /// <summary>vera_A [r, max in] and vera_B [max out, r], kaiming-uniform (bound √(6 / fan_in)) as PEFT's _kaiming_init.</summary>
    internal override IReadOnlyDictionary<string, Tensor> SharedTensors(IReadOnlyList<Module> targetBaseLayers)
    {
        int maxIn = targetBaseLayers.Max(m => TunerLayer.FeaturesOf(m).In);
        int maxOut = targetBaseLayers.Max(m => TunerLayer.FeaturesOf(m).Out);
        var generator = new Generator(unchecked((ulong)ProjectionPrngKey));
        double boundA = Math.Sqrt(6.0 / maxIn), boundB = Math.Sqrt(6.0 / R);
        return new Dictionary<string, Tensor>
        {
            ["vera_A"] = Tensor.Rand([R, maxIn], generator, DType.F32, -boundA, boundA),
            ["vera_B"] = Tensor.Rand([maxOut, R], generator, DType.F32, -boundB, boundB),
        };
    }

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared) =>
        ((VeraLayer)layer).UpdateLayer(adapter, shared["vera_A"], shared["vera_B"], R, VeraDropout, InitWeights, DInitial);
}
