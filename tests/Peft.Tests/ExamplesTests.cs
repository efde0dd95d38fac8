namespace Peft.Tests;

/// <summary>Every example scenario runs to its goal (the training loss falls; the mixed batch matches each adapter) in
/// a few epochs, so the examples cannot rot.</summary>
[TestFixture]
public class ExamplesTests
{
    public static IEnumerable<string> Scenarios() => Peft.Examples.Program.Scenarios.Keys;

    [TestCaseSource(nameof(Scenarios))]
    public void ScenarioReachesItsGoal(string name)
    {
        var output = new StringWriter();
        bool ok = Peft.Examples.Program.Scenarios[name](output, 5);
        Assert.That(ok, Is.True, output.ToString());
        Assert.That(output.ToString(), Does.Contain("trainable params: ").Or.Contain("mixed batch matches"));
    }
}
