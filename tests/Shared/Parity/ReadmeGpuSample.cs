using Peft.Core;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.TestSupport;

/// <summary>README.md's "training on a GPU" sample, line for line, shared by the test that runs it on a real GPU
/// (Peft.Cuda.Tests) and the one that runs its device path on the emulated device (Peft.Tests).</summary>
internal static class ReadmeGpuSample
{
    /// <summary>Runs the sample in <paramref name="work"/> (a GPT-2 folder is written there first, and the sample's
    /// relative paths resolve there); returns the model's loss before and after its ten steps, and the trained model,
    /// which the caller disposes (the README's <c>using var</c> on its first line).</summary>
    public static (double First, double Last, Peft.PeftModel Model) Run(string work)
    {
        var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50257, "n_positions": 64}""");
        using (var m = AutoModel.Create(config)) m.SavePretrained(Path.Combine(work, "gpt2-folder"));
        var cwd = Environment.CurrentDirectory;
        Environment.CurrentDirectory = work;
        try
        {
            var peft = Peft.PeftModel.Create(AutoModel.FromPretrained("gpt2-folder"),
                new Peft.LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
            peft.To(Device.Cuda(0));                                       // parameters and buffers; tied weights stay tied
            var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 2e-4);
            using var ids = Tensor.FromArray(new long[] { 464, 2068, 7586, 21831, 18045 }, [1, -1]).To(Device.Cuda(0));
            double first = Loss(peft, ids);
            for (int step = 0; step < 10; step++)
            {
                using var scope = Tensor.NewScope();
                peft.ZeroGrad();
                peft.Forward(ids, labels: ids).Loss!.Backward();           // forward and backward on the GPU
                optimizer.Step();
            }
            peft.SavePretrained("my-adapter");                             // copied to the host; Hugging Face PEFT format
            return (first, Loss(peft, ids), peft);
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
        }
    }

    private static double Loss(Peft.PeftModel peft, Tensor ids)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        return peft.Forward(ids, labels: ids).Loss!.Item();
    }
}
