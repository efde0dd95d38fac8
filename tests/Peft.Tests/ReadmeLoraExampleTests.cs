using Peft.Transformers;

namespace Peft.Tests;

/// <summary>The README's LoRA sample, line for line, on a GPT-2 folder with the real tokenizer files.</summary>
[TestFixture]
public class ReadmeLoraExampleTests
{
    [Test]
    public void TheReadmeLoraSampleTrainsAndSaves()
    {
        var work = Directory.CreateTempSubdirectory("peft-readme-lora-").FullName;
        var cwd = Environment.CurrentDirectory;
        try
        {
            // A GPT-2 folder: tiny random weights with the real GPT-2 vocabulary (50257 ids), plus tokenizer files.
            var folder = Path.Combine(work, "gpt2-folder");
            var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50257, "n_positions": 64}""");
            using (var m = AutoModel.Create(config)) m.SavePretrained(folder);
            var tokenizerFiles = Peft.TestSupport.Gpt2Vocabulary.Folder();
            File.Copy(Path.Combine(tokenizerFiles, "vocab.json"), Path.Combine(folder, "vocab.json"));
            File.Copy(Path.Combine(tokenizerFiles, "merges.txt"), Path.Combine(folder, "merges.txt"));
            Environment.CurrentDirectory = work;

            var tok = AutoTokenizer.FromPretrained("gpt2-folder");
            using var peft = PeftModel.Create(AutoModel.FromPretrained("gpt2-folder"),
                new LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
            peft.PrintTrainableParameters();            // trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364
            var ids = Tensor.FromArray(tok.Encode("Peft.Native fine-tunes GPT-2 in C#.").Select(i => (long)i).ToArray(), [1, -1]);
            double first = Loss(peft, ids);
            for (int step = 0; step < 20; step++)
            {
                using var scope = Tensor.NewScope();
                peft.ZeroGrad();
                peft.Forward(ids, labels: ids).Loss!.Backward();                      // gradients reach only lora_A / lora_B
                using (Autograd.NoGrad()) foreach (var p in peft.Parameters().Where(p => p.Grad != null)) p.AddInPlace(p.Grad!, -1e-3);
            }
            double last = Loss(peft, ids);
            peft.SavePretrained("my-adapter");          // adapter_config.json + adapter_model.safetensors, loadable by Python peft

            Assert.That(last, Is.LessThan(first));
            Assert.That(File.Exists(Path.Combine(work, "my-adapter", "adapter_model.safetensors")));
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
            Directory.Delete(work, true);
        }
    }

    private static double Loss(PeftModel peft, Tensor ids)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        return peft.Forward(ids, labels: ids).Loss!.Item();
    }
}
