using Peft.Core;

namespace Peft.Transformers;

/// <summary>transformers' ACT2FN names mapped to ops.</summary>
public static class Activations
{
    /// <summary>Resolves an activation name from config.json; unknown names are a <see cref="ConfigException"/>.</summary>
    public static Func<Tensor, Tensor> Get(string name, string configPath) => name switch
    {
        "gelu" => x => x.Gelu(),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => x => x.Gelu(approximateTanh: true),
        "relu" => x => x.Relu(),
        "silu" or "swish" => x => x.Silu(),
        "tanh" => x => x.Tanh(),
        "sigmoid" => x => x.Sigmoid(),
        _ => throw new ConfigException(configPath, $"activation '{name}' is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, tanh, sigmoid)"),
    };
}
