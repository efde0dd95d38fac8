namespace Peft.Core;

// Matrix inverse with autograd, for the Cayley transform of OFT/BOFT ((I − Q)(I + Q)⁻¹) and for unmerging rotations.
public sealed partial class Tensor
{
    /// <summary>
    /// torch.linalg.inv: the inverse of each square matrix in the last two dims (batches allowed), computed in float64 by
    /// Gauss–Jordan elimination with partial pivoting and returned in this tensor's dtype (F32 or F64). Backward:
    /// dA = −A⁻ᵀ·G·A⁻ᵀ. A singular matrix throws.
    /// </summary>
    public Tensor Inverse()
    {
        if (Rank < 2 || _shape[^1] != _shape[^2])
            throw new ShapeMismatchException($"Inverse needs square matrices in the last two dims, got {Shapes.Format(_shape)}");
        if (DType is not (DType.F32 or DType.F64)) throw new NotSupportedException($"Inverse supports F32 and F64, not {DType}");
        int n = _shape[^1];
        double[] data;
        // Gauss-Jordan on the host in float64 (OFT's blocks are small); a device tensor is copied over and back.
        using (Autograd.NoGrad())
        using (var host = Device.Type == DeviceType.Cpu ? null : To(Device.Cpu))
        using (var f64 = (host ?? this).To(DType.F64))
            data = f64.ToArray<double>();
        int batches = n == 0 ? 0 : data.Length / (n * n);
        for (int b = 0; b < batches; b++) InvertInPlace(data.AsSpan(b * n * n, n * n), n, b);
        Tensor result;
        using (var inv = FromArray(data, (int[])_shape.Clone()))
        {
            var typed = DType == DType.F64 ? inv.Clone() : inv.To(DType);
            if (Device.Type == DeviceType.Cpu) result = typed;
            else using (typed) result = typed.To(Device);
        }
        return Autograd.Record(result, "Inverse", [this], saved =>
        {
            var y = saved.Save(result);
            return (g, _) =>
            {
                using var yt = y.Transpose(-2, -1);
                using var left = yt.MatMul(g);
                using var both = left.MatMul(yt);
                return [both.Neg()];
            };
        });
    }

    private static void InvertInPlace(Span<double> a, int n, int batch)
    {
        var inv = new double[n * n];
        for (int i = 0; i < n; i++) inv[i * n + i] = 1;
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < n; r++) if (Math.Abs(a[r * n + col]) > Math.Abs(a[pivot * n + col])) pivot = r;
            if (Math.Abs(a[pivot * n + col]) < 1e-300) throw new InvalidOperationException($"Inverse: matrix {batch} of the batch is singular");
            if (pivot != col)
                for (int k = 0; k < n; k++)
                {
                    (a[col * n + k], a[pivot * n + k]) = (a[pivot * n + k], a[col * n + k]);
                    (inv[col * n + k], inv[pivot * n + k]) = (inv[pivot * n + k], inv[col * n + k]);
                }
            double d = a[col * n + col];
            for (int k = 0; k < n; k++) { a[col * n + k] /= d; inv[col * n + k] /= d; }
            for (int r = 0; r < n; r++)
            {
                if (r == col) continue;
                double f = a[r * n + col];
                if (f == 0) continue;
                for (int k = 0; k < n; k++) { a[r * n + k] -= f * a[col * n + k]; inv[r * n + k] -= f * inv[col * n + k]; }
            }
        }
        inv.CopyTo(a);
    }
}
