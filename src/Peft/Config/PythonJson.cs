using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Peft;

/// <summary>
/// Writes JSON exactly as Python's <c>json.dumps(obj, indent=2, sort_keys=True)</c> does (what PEFT uses for
/// adapter_config.json): keys sorted at every level, two-space indent, ", "/": " separators, non-ASCII escaped as
/// \uXXXX, numbers as their original tokens, no trailing newline.
/// </summary>
public static class PythonJson
{
    /// <summary>Serialises <paramref name="node"/>.</summary>
    public static string Dumps(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(sb, node, 0);
        return sb.ToString();
    }

    /// <summary>A float as Python's repr writes it ("0.05", "16.0", "1e-05").</summary>
    public static JsonNode Float(double v)
    {
        if (double.IsNaN(v) || double.IsInfinity(v)) throw new ArgumentException("JSON cannot hold NaN or infinity");
        string r = v.ToString("R", CultureInfo.InvariantCulture);
        if (r.Contains('E'))
        {
            var parts = r.Split('E');
            int exp = int.Parse(parts[1], CultureInfo.InvariantCulture);
            r = $"{parts[0]}e{(exp < 0 ? "-" : "+")}{Math.Abs(exp):00}";
        }
        else if (!r.Contains('.')) r += ".0";
        return JsonNode.Parse(r)!;
    }

    private static void Write(StringBuilder sb, JsonNode? node, int indent)
    {
        switch (node)
        {
            case null:
                sb.Append("null");
                break;
            case JsonObject o:
                if (o.Count == 0) { sb.Append("{}"); break; }
                sb.Append("{\n");
                var keys = o.Select(kv => kv.Key).Order(StringComparer.Ordinal).ToList();
                for (int i = 0; i < keys.Count; i++)
                {
                    sb.Append(' ', indent + 2);
                    WriteString(sb, keys[i]);
                    sb.Append(": ");
                    Write(sb, o[keys[i]], indent + 2);
                    sb.Append(i < keys.Count - 1 ? ",\n" : "\n");
                }
                sb.Append(' ', indent).Append('}');
                break;
            case JsonArray a:
                if (a.Count == 0) { sb.Append("[]"); break; }
                sb.Append("[\n");
                for (int i = 0; i < a.Count; i++)
                {
                    sb.Append(' ', indent + 2);
                    Write(sb, a[i], indent + 2);
                    sb.Append(i < a.Count - 1 ? ",\n" : "\n");
                }
                sb.Append(' ', indent).Append(']');
                break;
            case JsonValue v when v.TryGetValue<string>(out var s):
                WriteString(sb, s);
                break;
            default:
                sb.Append(node.ToJsonString()); // numbers keep their token text; true/false
                break;
        }
    }

    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || c > 0x7E) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
