namespace Peft.Core.Tests;

internal static class RepoPaths
{
    /// <summary>The repository root (the folder holding Peft.Native.sln).</summary>
    public static string Root
    {
        get
        {
            for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return d.FullName;
            throw new DirectoryNotFoundException("Peft.Native.sln not found above the test directory");
        }
    }
}
