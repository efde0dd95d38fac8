using System.Text.RegularExpressions;
using Peft.Nn;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's target-module rules, shared by every tuner: a string is a regular expression that must match the whole
/// module name; a list matches a name equal to an entry or ending with "." + entry; "all-linear" takes every
/// Linear/Conv1D except the output head; exclude_modules uses the same rules; layers_to_transform keeps modules whose
/// layer index (the number after layers_pattern, else the last ".N." segment) is listed.
/// </summary>
public static class TargetMatcher
{
    /// <summary>The module names of <paramref name="model"/> a config targets, in model order.</summary>
    public static List<string> Targets(PreTrainedModel model, TunerConfig config, IReadOnlyCollection<string> protectedPrefixes)
    {
        bool allLinear = config.TargetModules is ["all-linear"] || config.TargetModulesRegex == "all-linear";
        var candidates = Candidates(model, allLinear);
        var found = new List<string>();
        foreach (var name in candidates)
        {
            if (protectedPrefixes.Any(p => name == p || name.StartsWith(p + ".", StringComparison.Ordinal))) continue;
            bool hit = allLinear ? !OutputHeads.Contains(name) : Matches(name, config.TargetModules, config.TargetModulesRegex);
            if (!hit) continue;
            if (Matches(name, config.ExcludeModules, config.ExcludeModulesRegex)) continue;
            if (config.LayersToTransform is { } layers)
            {
                int? index = LayerIndex(name, config.LayersPattern);
                if (index == null || !layers.Contains(index.Value)) continue;
            }
            found.Add(name);
        }
        if (found.Count == 0)
        {
            var sample = string.Join(", ", candidates.Take(6));
            var asked = config.TargetModulesRegex ?? (config.TargetModules == null ? "(none)" : "[" + string.Join(", ", config.TargetModules) + "]");
            throw new ArgumentException($"Target modules {asked} not found in the base model. Linear layers it has include: {sample}{(candidates.Count > 6 ? ", ..." : "")}");
        }
        return found;
    }

    /// <summary>
    /// Adaptable layers by path: plain Linear/Conv1D (and Embedding unless "all-linear"), and layers already wrapped by
    /// a tuner under their own path — never the modules inside a wrapper (its base_layer, lora_A.x, ...).
    /// </summary>
    private static List<string> Candidates(PreTrainedModel model, bool allLinear)
    {
        var result = new List<string>();
        var wrapped = new List<string>();
        foreach (var (name, module) in model.NamedModules())
        {
            if (wrapped.Any(w => name.StartsWith(w + ".", StringComparison.Ordinal))) continue;
            if (module is TunerLayer or ModulesToSaveWrapper) wrapped.Add(name);
            var layer = module is TunerLayer t ? t.BaseLayer : module;
            bool linear = layer is Linear or Conv1D or QuantizedLinear;
            bool embedding = layer is Embedding;
            if (linear || (!allLinear && embedding)) result.Add(name);
        }
        return result;
    }

    /// <summary>PEFT's check for one module name against a list (exact or dotted suffix) or a full-match regex.</summary>
    public static bool Matches(string name, string[]? list, string? regex)
    {
        if (regex != null) return Regex.IsMatch(name, $"^(?:{regex})$");
        if (list == null) return false;
        foreach (var entry in list)
            if (name == entry || name.EndsWith("." + entry, StringComparison.Ordinal)) return true;
        return false;
    }

    /// <summary>The layer index of a module name, as PEFT extracts it.</summary>
    public static int? LayerIndex(string name, string[]? layersPattern)
    {
        Match m;
        if (layersPattern == null || layersPattern.Length == 0) m = Regex.Match(name, @"^.*\.[^.]*\.(\d+)\.");
        else
        {
            m = Match.Empty;
            foreach (var p in layersPattern)
            {
                m = Regex.Match(name, $@"^.*\.{p}\.(\d+)\.");
                if (m.Success) break;
            }
        }
        return m.Success ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    /// <summary>Layers "all-linear" leaves alone: the output embedding (LM / MLM decoder) and classification heads.</summary>
    private static readonly HashSet<string> OutputHeads = ["lm_head", "cls.predictions.decoder", "lm_head.decoder", "score", "classifier", "classifier.out_proj"];
}
