// Saves a LoRA adapter into args[0] again and again, every lora_B element set to the save's number, and prints the
// number once the save returned. KillMidSaveTests kills this process at random moments and checks what is on disk.
using Peft;
using Peft.Core;
using Peft.TestSupport;

var dir = args[0];
using var peft = PeftModel.Create(TinyConfigs.Create(TinyConfigs.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn", "c_fc"], TaskType = "CAUSAL_LM" });
var loraB = peft.NamedParameters().Where(p => p.Name.Contains("lora_B")).Select(p => p.Parameter).ToList();
for (int i = 1; ; i++)
{
    using (Autograd.NoGrad())
        foreach (var b in loraB)
        {
            using var value = Tensor.Full(b.Shape, i, b.DType);
            b.CopyFrom(value);
        }
    peft.SavePretrained(dir);
    Console.Out.WriteLine(i);
    Console.Out.Flush();
}
