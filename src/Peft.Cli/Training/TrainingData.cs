using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Peft.Cli.Training;

/// <summary>A data file that cannot be used: names the file, the line and the problem (an <see cref="IOException"/>,
/// so the CLI reports it as bad input).</summary>
internal sealed class DataFormatException(string path, int line, string problem)
    : IOException(line > 0 ? $"{path}:{line}: {problem}" : $"{path}: {problem}");

/// <summary>One training example; which fields are set depends on the task.</summary>
internal sealed record Example(string? Text = null, string? Label = null, string? Prompt = null, string? Completion = null,
    string? Source = null, string? Target = null, string[]? Tokens = null, string[]? Tags = null);

/// <summary>
/// Reads training data: JSON lines (one object per line) or CSV with a header. Field names by task —
/// seq-cls: text (or sentence) + label; causal-lm: text, or prompt + completion; seq2seq: source + target (or input +
/// output); token-cls (JSON lines only): tokens + tags (or labels), two lists of equal length.
/// </summary>
internal static class TrainingData
{
    public static List<Example> Load(string path, string task)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no data file at '{path}'", path);
        var rows = path.EndsWith(".csv", StringComparison.OrdinalIgnoreCase) ? ReadCsv(path) : ReadJsonLines(path);
        var examples = rows.Select(r => ToExample(path, r.Line, r.Fields, task)).ToList();
        if (examples.Count == 0) throw new DataFormatException(path, 0, "holds no examples");
        return examples;
    }

    private static IEnumerable<(int Line, JsonObject Fields)> ReadJsonLines(string path)
    {
        int n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new DataFormatException(path, n, $"not valid JSON ({e.Message.Split('.')[0]})"); }
            yield return (n, node as JsonObject ?? throw new DataFormatException(path, n, "each line must be a JSON object"));
        }
    }

    private static IEnumerable<(int Line, JsonObject Fields)> ReadCsv(string path)
    {
        var records = CsvRecords(path).ToList();
        if (records.Count == 0) throw new DataFormatException(path, 0, "is empty (a header row is expected)");
        var header = records[0].Cells;
        foreach (var (line, cells) in records.Skip(1))
        {
            if (cells.Count == 1 && cells[0].Length == 0) continue;
            if (cells.Count != header.Count) throw new DataFormatException(path, line, $"has {cells.Count} columns, the header has {header.Count}");
            var obj = new JsonObject();
            for (int i = 0; i < header.Count; i++) obj[header[i].Trim()] = cells[i];
            yield return (line, obj);
        }
    }

    /// <summary>RFC 4180 records: quoted cells may hold commas, doubled quotes and line breaks.</summary>
    private static IEnumerable<(int Line, List<string> Cells)> CsvRecords(string path)
    {
        var text = File.ReadAllText(path);
        var cells = new List<string>();
        var cell = new StringBuilder();
        bool quoted = false;
        int line = 1, start = 1;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { cell.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else { if (c == '\n') line++; cell.Append(c); }
                continue;
            }
            switch (c)
            {
                case '"' when cell.Length == 0: quoted = true; break;
                case ',': cells.Add(cell.ToString()); cell.Clear(); break;
                case '\r': break;
                case '\n':
                    cells.Add(cell.ToString());
                    cell.Clear();
                    yield return (start, cells);
                    cells = new List<string>();
                    start = ++line;
                    break;
                default: cell.Append(c); break;
            }
        }
        if (quoted) throw new DataFormatException(path, start, "a quoted cell is not closed");
        if (cell.Length > 0 || cells.Count > 0)
        {
            cells.Add(cell.ToString());
            yield return (start, cells);
        }
    }

    private static Example ToExample(string path, int line, JsonObject f, string task)
    {
        string? Str(params string[] names)
        {
            foreach (var n in names)
                if (f[n] is JsonValue v) return v.TryGetValue<string>(out var s) ? s : v.ToJsonString();
            return null;
        }
        string Need(params string[] names) => Str(names) ?? throw new DataFormatException(path, line, $"needs a '{names[0]}' field for task {task}");
        string[] List(params string[] names)
        {
            foreach (var n in names)
                if (f[n] is JsonArray a) return a.Select(x => x is JsonValue v && v.TryGetValue<string>(out var s) ? s : x?.ToJsonString() ?? "").ToArray();
            throw new DataFormatException(path, line, $"needs a '{names[0]}' list for task {task}");
        }
        switch (task)
        {
            case "seq-cls":
                return new Example(Text: Need("text", "sentence"), Label: Need("label"));
            case "causal-lm":
                if (Str("prompt") is { } prompt) return new Example(Prompt: prompt, Completion: Need("completion"));
                return new Example(Text: Need("text"));
            case "seq2seq":
                return new Example(Source: Need("source", "input"), Target: Need("target", "output"));
            case "token-cls":
                var tokens = List("tokens");
                var tags = List("tags", "labels");
                if (tokens.Length != tags.Length) throw new DataFormatException(path, line, $"has {tokens.Length} tokens but {tags.Length} tags");
                return new Example(Tokens: tokens, Tags: tags);
            default:
                throw new ArgumentException($"unknown --task '{task}' (causal-lm, seq-cls, token-cls, seq2seq)");
        }
    }
}
