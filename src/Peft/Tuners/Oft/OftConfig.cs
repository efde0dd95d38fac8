using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's OFTConfig (<c>peft_type = "OFT"</c>, the format of PEFT ≥ 0.14 with the Cayley–Neumann default of 0.18):
/// r = 0 xor oft_block_size = 32 (r·block = in, adjusted per layer), block_share = false, coft = false, eps = 6e-5,
/// use_cayley_neumann = true, num_cayley_neumann_terms = 5, init_weights = true (R = I), bias = "none".
/// </summary>
/// <example><code>var config = new OftConfig { OftBlockSize = 8, TargetModules = ["q_proj", "v_proj"] };</code></example>
public sealed class OftConfig : TunerConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public OftConfig() : base(new JsonObject
    {
        ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["bias"] = "none", ["block_share"] = false, ["coft"] = false,
        ["eps"] = PythonJson.Float(6e-5), ["exclude_modules"] = null, ["fan_in_fan_out"] = false, ["inference_mode"] = false,
        ["init_weights"] = true, ["layers_pattern"] = null, ["layers_to_transform"] = null, ["module_dropout"] = PythonJson.Float(0.0),
        ["modules_to_save"] = null, ["num_cayley_neumann_terms"] = 5, ["oft_block_size"] = 32, ["peft_type"] = "OFT", ["r"] = 0,
        ["revision"] = null, ["target_modules"] = null, ["task_type"] = null, ["use_cayley_neumann"] = true,
    }) { }

    internal OftConfig(JsonObject json) : base(json) => Validate();

    /// <summary>Number of diagonal blocks (0: use <see cref="OftBlockSize"/>).</summary>
    public int R { get => (int)GetDouble("r", 0); set => Json["r"] = value; }

    /// <summary>Block size (0: use <see cref="R"/>).</summary>
    public int OftBlockSize { get => (int)GetDouble("oft_block_size", 32); set => Json["oft_block_size"] = value; }

    /// <summary>One rotation shared by every block.</summary>
    public bool BlockShare { get => GetBool("block_share", false); set => Json["block_share"] = value; }

    /// <summary>Constrained OFT.</summary>
    public bool Coft { get => GetBool("coft", false); set => Json["coft"] = value; }

    /// <summary>COFT's radius.</summary>
    public double Eps { get => GetDouble("eps", 6e-5); set => Json["eps"] = PythonJson.Float(value); }

    /// <summary>Cayley–Neumann series instead of the exact inverse.</summary>
    public bool UseCayleyNeumann { get => GetBool("use_cayley_neumann", true); set => Json["use_cayley_neumann"] = value; }

    /// <summary>Terms of the series.</summary>
    public int NumCayleyNeumannTerms { get => (int)GetDouble("num_cayley_neumann_terms", 5); set => Json["num_cayley_neumann_terms"] = value; }

    /// <summary>Kept for PEFT's format; PEFT's linear OFT forward does not apply it either.</summary>
    public double ModuleDropout { get => GetDouble("module_dropout", 0); set => Json["module_dropout"] = PythonJson.Float(value); }

    /// <summary>R = I at init (true) or random N(0, 0.1) triangles (false).</summary>
    public bool InitWeights { get => GetBool("init_weights", true); set => Json["init_weights"] = value; }

    /// <summary>"none", "all" or "oft_only".</summary>
    public string Bias { get => GetString("bias") ?? "none"; set => Json["bias"] = value; }

    /// <inheritdoc/>
    public override string Prefix => "oft_";

    internal override string BiasRule => Bias;

    /// <inheritdoc/>
    public override PeftConfig Clone() => new OftConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateTargets();
        if (R < 0 || OftBlockSize < 0) throw new InvalidOperationException($"r and oft_block_size must not be negative (r = {R}, oft_block_size = {OftBlockSize})");
        if ((R == 0) == (OftBlockSize == 0))
            throw new InvalidOperationException($"specify either r ({R}) or oft_block_size ({OftBlockSize}), not both and not neither: r × oft_block_size = in_features");
        if (UseCayleyNeumann && NumCayleyNeumannTerms < 1) throw new InvalidOperationException($"num_cayley_neumann_terms must be at least 1, got {NumCayleyNeumannTerms}");
        if (Bias is not ("none" or "all" or "oft_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'oft_only', got '{Bias}'");
    }

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new OftLayer(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared) =>
        ((OftLayer)layer).UpdateLayer(adapter, R, OftBlockSize, BlockShare, Coft, Eps, UseCayleyNeumann, NumCayleyNeumannTerms, InitWeights);
}
