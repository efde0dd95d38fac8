using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's BOFTConfig (<c>peft_type = "BOFT"</c>): boft_block_size = 4 xor boft_block_num = 0, boft_n_butterfly_factor = 1
/// (no butterfly), boft_dropout = 0, init_weights = true, bias = "none". PEFT itself falls back to factor 1 when its
/// CUDA extension is missing; here the configured factor is always honoured, so files match the config that made them.
/// </summary>
/// <example><code>var config = new BoftConfig { BoftBlockSize = 4, BoftNButterflyFactor = 2, TargetModules = ["q_proj", "v_proj"] };</code></example>
public sealed class BoftConfig : TunerConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public BoftConfig() : base(new JsonObject
    {
        ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["bias"] = "none", ["boft_block_num"] = 0, ["boft_block_size"] = 4,
        ["boft_dropout"] = PythonJson.Float(0.0), ["boft_n_butterfly_factor"] = 1, ["exclude_modules"] = null, ["fan_in_fan_out"] = false,
        ["inference_mode"] = false, ["init_weights"] = true, ["layers_pattern"] = null, ["layers_to_transform"] = null,
        ["modules_to_save"] = null, ["peft_type"] = "BOFT", ["revision"] = null, ["target_modules"] = null, ["task_type"] = null,
    }) { }

    internal BoftConfig(JsonObject json) : base(json) => Validate();

    /// <summary>Block size (0: use <see cref="BoftBlockNum"/>).</summary>
    public int BoftBlockSize { get => (int)GetDouble("boft_block_size", 4); set => Json["boft_block_size"] = value; }

    /// <summary>Number of blocks (0: use <see cref="BoftBlockSize"/>).</summary>
    public int BoftBlockNum { get => (int)GetDouble("boft_block_num", 0); set => Json["boft_block_num"] = value; }

    /// <summary>Butterfly factors (1: plain block-diagonal OFT).</summary>
    public int BoftNButterflyFactor { get => (int)GetDouble("boft_n_butterfly_factor", 1); set => Json["boft_n_butterfly_factor"] = value; }

    /// <summary>Probability-like fraction of blocks replaced by I in training.</summary>
    public double BoftDropout { get => GetDouble("boft_dropout", 0); set => Json["boft_dropout"] = PythonJson.Float(value); }

    /// <summary>R = 0, s = 1 (a no-op) or random (false).</summary>
    public bool InitWeights { get => GetBool("init_weights", true); set => Json["init_weights"] = value; }

    /// <summary>"none", "all" or "boft_only".</summary>
    public string Bias { get => GetString("bias") ?? "none"; set => Json["bias"] = value; }

    /// <inheritdoc/>
    public override string Prefix => "boft_";

    internal override string BiasRule => Bias;

    /// <inheritdoc/>
    public override PeftConfig Clone() => new BoftConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateTargets();
        if ((BoftBlockSize == 0) == (BoftBlockNum == 0))
            throw new InvalidOperationException($"specify either boft_block_size ({BoftBlockSize}) or boft_block_num ({BoftBlockNum}), not both and not neither");
        if (BoftNButterflyFactor < 1) throw new InvalidOperationException($"boft_n_butterfly_factor must be a positive integer, got {BoftNButterflyFactor}");
        if (BoftDropout is < 0 or > 1) throw new InvalidOperationException($"boft_dropout must be in [0, 1], got {BoftDropout}");
        if (Bias is not ("none" or "all" or "boft_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'boft_only', got '{Bias}'");
    }

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new BoftLayer(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared) =>
        ((BoftLayer)layer).UpdateLayer(adapter, BoftBlockSize, BoftBlockNum, BoftNButterflyFactor, BoftDropout, InitWeights);
}
