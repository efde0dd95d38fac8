using Peft.Bench;

// Peft.Bench: benchmark suites. Usage: dotnet run -c Release --project bench/Peft.Bench -- gemm (or: peft bench gemm)
var suite = args.Length > 0 ? args[0] : "gemm";
if (Suites.Run(suite, Console.Out)) return 0;
Console.Error.WriteLine($"unknown suite '{suite}'. Suites: {string.Join(", ", Suites.Names)}");
return 2;
