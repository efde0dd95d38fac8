using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Peft.Core.Cpu;

/// <summary>
/// Row-major GEMM: C = α·op(A)·op(B) + β·C, op = optional transpose. F32 uses the BLIS/GotoBLAS scheme:
/// B is packed into KC×NR micro-panels (L1-resident while a micro-kernel runs), A into MC×KC blocks of MR-row
/// micro-panels (L2-resident), and an MR×NR register-tiled FMA micro-kernel does all the arithmetic. Packing also
/// applies α and converts BF16/F16 inputs to F32, so the micro-kernel only ever sees aligned F32 panels.
/// C is cut into tiles, two per thread (see <see cref="Grid"/>), each packing its own A blocks and B panels.
/// </summary>
internal static unsafe partial class Gemm
{
    private static readonly bool Wide = Avx512F.IsSupported;
    // Six rows: the micro-kernels (Kernel6x32 / Kernel6x16) and the A packers (PackRows6 / PackColumns6) are written for it.
    internal static readonly int MR = 6;
    internal static readonly int NR = Wide ? 32 : 16;
    private const int NC = 3072;
    // KC × NR floats of B stay near L1 while a micro-kernel runs, MC × KC of A in L2. AVX-512: 512 / 480, which beat
    // the old 256 / 120 in 21 of 24 alternating comparisons on the Xeon VM (1024³ and 2048³, 1 and 2 threads, six runs
    // of `bench gemm-blocking`; +14 % on average, BENCHMARKS.md); AVX2 keeps 256 / 120 (80–92 % of peak on an EPYC).
    // Not constants, so that bench can compare candidates in one process.
    private static int KC = Wide ? 512 : 256, MC = Wide ? 480 : 120;

    /// <summary>Bench only: split C by rows alone (the partition before tile grids), to compare both in one process.</summary>
    internal static bool RowSplitOnly;

    /// <summary>Tiles per thread in a multi-threaded GEMM (2; bench may set 1 to compare).</summary>
    internal static int TilesPerThread = 2;

    /// <summary>Sets the cache blocking (bench only; not thread-safe against running GEMMs).</summary>
    internal static void SetBlocking(int kc, int mc)
    {
        if (kc <= 0 || mc <= 0 || mc % MR != 0) throw new ArgumentException($"blocking KC={kc}, MC={mc}: both positive, MC a multiple of {MR}");
        (KC, MC) = (kc, mc);
    }

    /// <summary>The current cache blocking.</summary>
    internal static (int KC, int MC) Blocking => (KC, MC);

    /// <summary>The element types an operand may have; packing widens the 16-bit ones exactly.</summary>
    internal enum Element : byte { F32, BF16, F16 }

    /// <summary>Describes one operand: base pointer, leading dimension, transpose flag and element type.</summary>
    internal readonly struct Operand(void* ptr, long ld, bool trans, Element element)
    {
        public readonly void* Ptr = ptr;
        public readonly long Ld = ld;
        public readonly bool Trans = trans;
        public readonly Element Type = element;
        public bool IsF32 => Type == Element.F32;
    }

    /// <summary>The GEMM element type of a tensor dtype (F32, BF16 or F16).</summary>
    internal static Element ElementOf(DType dtype) => dtype switch
    {
        DType.F32 => Element.F32,
        DType.BF16 => Element.BF16,
        DType.F16 => Element.F16,
        _ => throw new DTypeMismatchException($"the F32 GEMM takes F32, BF16 or F16 operands, not {dtype}"),
    };

    public static void Sgemm(int m, int n, int k, float alpha, Operand a, Operand b, float beta, float* c, long ldc, int threads = 0)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0) { ScaleC(m, n, beta, c, ldc); return; }
        // β = 0: the first K-block stores into C instead of accumulating, so C is never cleared separately.
        bool storeFirst = beta == 0;
        if (!storeFirst) ScaleC(m, n, beta, c, ldc);
        if (threads <= 0) threads = CpuParallel.Threads;
        // Fewer threads for small problems: a thread needs a few MFLOP to pay for its start.
        threads = (int)Math.Clamp((long)m * n * k / 2_000_000, 1, threads);
        threads = (int)Math.Min(threads, (long)((m + MR - 1) / MR) * ((n + NR - 1) / NR));
        if (alpha == 1 && storeFirst && TryThin(m, n, k, a, b, c, ldc, threads)) return;

        // C is cut into a grid of tiles, each packing its own A and B panels, so no thread waits for another inside a
        // GEMM: one parallel region instead of two barriers per K slice, and a thread reads only the B columns of
        // its tile (with rows split alone, every thread streamed the whole B panel for its few rows — at 16 threads
        // and a step's 256 rows, 16 rows each). Two tiles per thread, claimed as threads come free: with one each,
        // the calling thread spent 14 % of a GPT-2 step waiting for a worker that had joined its GEMM late.
        int parts = threads == 1 ? 1 : TilesPerThread * threads;
        var (rowsPer, colsPer) = RowSplitOnly ? (RoundUp((m + parts - 1) / parts, MR), RoundUp(n, NR)) : Grid(m, n, parts);
        int tileCols = (n + colsPer - 1) / colsPer, tiles = (m + rowsPer - 1) / rowsPer * tileCols;
        int ncTile = Math.Min(NC, colsPer);
        // Packing buffers come from the caching allocator: straight from malloc, the multi-MB B panel would be
        // mapped and page-faulted afresh on every call.
        long bBytes = (long)Math.Min(KC, k) * (ncTile + NR) * sizeof(float);
        // A's buffer keeps one MR-row panel of slack past its last panel: PackRows6 / PackColumns6 store eight lanes
        // for six rows, so their final store runs two floats past the panel it fills.
        long aBytes = (long)(Math.Min(MC, rowsPer) + MR) * Math.Min(KC, k) * sizeof(float);
        void Tile(int t)
        {
            int r0 = t / tileCols * rowsPer, r1 = Math.Min(m, r0 + rowsPer);
            int c0 = t % tileCols * colsPer, c1 = Math.Min(n, c0 + colsPer);
            float* bPack = (float*)CpuAllocator.Allocate(bBytes, out long bReserved);
            float* aPack = (float*)CpuAllocator.Allocate(aBytes, out long aReserved);
            try
            {
                for (int jc = c0; jc < c1; jc += ncTile)
                {
                    int nc = Math.Min(ncTile, c1 - jc);
                    for (int pc = 0; pc < k; pc += KC)
                    {
                        int kc = Math.Min(KC, k - pc);
                        PackB(b, pc, kc, jc, 0, nc, bPack);
                        RowBlocks(r0, r1, a, alpha, pc, kc, jc, nc, bPack, aPack, c, ldc, storeFirst && pc == 0);
                    }
                }
            }
            finally
            {
                CpuAllocator.Release((byte*)bPack, bReserved);
                CpuAllocator.Release((byte*)aPack, aReserved);
            }
        }
        if (tiles == 1) Tile(0);
        else CpuParallel.For(tiles, Tile);
    }

    /// <summary>
    /// The tiles C is cut into: rows a multiple of MR, columns a multiple of NR, at most <paramref name="threads"/> of
    /// them. Chosen to make the largest tile's time smallest, modelled per unit of k in
    /// units of 1/12 cycle: its tile's area (2 flops per element at ≈ 24 flops per cycle) plus its packing — A's rows
    /// at ≈ 2 cycles per element (the MR-row interleave), B's columns at ≈ 0.7 (row copies or 8×8 transposes). With A
    /// packing priced at B's, 2 threads split 256³ by columns, each packing all of A, and ran ≈ 10 % slower.
    /// </summary>
    internal static (int RowsPer, int ColsPer) Grid(int m, int n, int threads)
    {
        (int RowsPer, int ColsPer) best = (RoundUp(m, MR), RoundUp(n, NR));
        long bestCost = long.MaxValue;
        for (int tm = 1; tm <= threads; tm++)
        {
            int tn = threads / tm;
            int rows = RoundUp((m + tm - 1) / tm, MR), cols = RoundUp((n + tn - 1) / tn, NR);
            long cost = (long)rows * cols + 24L * rows + 8L * cols;
            if (cost < bestCost) (best, bestCost) = ((rows, cols), cost);
        }
        return best;
    }

    private static int RoundUp(int v, int to) => (v + to - 1) / to * to;

    private static void RowBlocks(int r0, int r1, Operand a, float alpha, int pc, int kc, int jc, int nc, float* bPack, float* aPack, float* c, long ldc, bool store)
    {
        int nr = NR;
        float* tile = stackalloc float[MR * 32];
        for (int ic = r0; ic < r1; ic += MC)
        {
            int mc = Math.Min(MC, r1 - ic);
            PackA(a, alpha, ic, mc, pc, kc, aPack);
            for (int jr = 0; jr < nc; jr += nr)
            {
                int nrEff = Math.Min(nr, nc - jr);
                float* bp = bPack + (long)jr * kc;
                for (int ir = 0; ir < mc; ir += MR)
                {
                    int mrEff = Math.Min(MR, mc - ir);
                    float* ap = aPack + (long)ir * kc;
                    float* cp = c + (long)(ic + ir) * ldc + jc + jr;
                    if (mrEff == MR && nrEff == nr) MicroKernel(kc, ap, bp, cp, ldc, store);
                    else
                    {
                        // Edge tile: compute a full tile into scratch, write only the valid part.
                        MicroKernel(kc, ap, bp, tile, nr, store: true);
                        for (int i = 0; i < mrEff; i++)
                            for (int j = 0; j < nrEff; j++)
                                cp[i * ldc + j] = store ? tile[i * nr + j] : cp[i * ldc + j] + tile[i * nr + j];
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Load(Operand o, long index) => o.Type switch
    {
        Element.BF16 => BitConverter.UInt32BitsToSingle((uint)((ushort*)o.Ptr)[index] << 16),
        Element.F16 => (float)((Half*)o.Ptr)[index],
        _ => ((float*)o.Ptr)[index],
    };

    /// <summary>Packs op(A)[ic..ic+mc, pc..pc+kc]·α as MR-row panels: panel p holds, for each k, MR consecutive rows.</summary>
    private static void PackA(Operand a, float alpha, int ic, int mc, int pc, int kc, float* dst)
    {
        for (int ir = 0; ir < mc; ir += MR)
        {
            int rows = Math.Min(MR, mc - ir);
            float* panel = dst + (long)ir * kc;
            if (a.Trans && a.IsF32 && rows == MR)
            {
                // op(A) = Aᵀ (a weight gradient's dYᵀ): the panel's MR values for one k are contiguous in A's row k,
                // so read and write both run in order (per row i it was a read strided by A's width for every k).
                float* src = (float*)a.Ptr + (long)pc * a.Ld + ic + ir;
                if (Avx.IsSupported) PackColumns6(src, a.Ld, kc, alpha, panel);
                else
                    for (int p = 0; p < kc; p++, src += a.Ld)
                        for (int i = 0; i < MR; i++) panel[p * MR + i] = alpha * src[i];
                continue;
            }
            if (!a.Trans && a.IsF32 && rows == MR && Avx.IsSupported)
            {
                PackRows6((float*)a.Ptr + (ic + ir) * a.Ld + pc, a.Ld, kc, alpha, panel);
                continue;
            }
            for (int i = 0; i < MR; i++)
            {
                if (i >= rows) { for (int p = 0; p < kc; p++) panel[p * MR + i] = 0; continue; }
                long row = ic + ir + i;
                if (!a.Trans)
                {
                    long baseIdx = row * a.Ld + pc;
                    if (a.IsF32) { float* src = (float*)a.Ptr + baseIdx; for (int p = 0; p < kc; p++) panel[p * MR + i] = alpha * src[p]; }
                    else for (int p = 0; p < kc; p++) panel[p * MR + i] = alpha * Load(a, baseIdx + p);
                }
                else for (int p = 0; p < kc; p++) panel[p * MR + i] = alpha * Load(a, (pc + p) * a.Ld + row);
            }
        }
    }

    /// <summary>Packs columns [c0, c1) of op(B)[pc..pc+kc, jc..jc+nc] as NR-column panels: for each k, NR consecutive
    /// columns (zero-padded past nc). c0 is a multiple of NR.</summary>
    private static void PackB(Operand b, int pc, int kc, int jc, int c0, int nc, float* dst)
    {
        int nr = NR;
        for (int jr = c0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* panel = dst + (long)jr * kc;
            if (!b.Trans)
            {
                for (int p = 0; p < kc; p++)
                {
                    long rowBase = (pc + p) * b.Ld + jc + jr;
                    float* d = panel + p * nr;
                    if (b.IsF32 && cols == nr && Vector256.IsHardwareAccelerated)
                    {
                        // A whole panel row: straight vector copies (Buffer.MemoryCopy's call cost a third of the
                        // copy at 128 bytes).
                        float* s = (float*)b.Ptr + rowBase;
                        for (int j = 0; j < nr; j += 8) Vector256.Store(Vector256.Load(s + j), d + j);
                        continue;
                    }
                    if (b.IsF32) Buffer.MemoryCopy((float*)b.Ptr + rowBase, d, nr * 4, cols * 4);
                    else for (int j = 0; j < cols; j++) d[j] = Load(b, rowBase + j);
                    for (int j = cols; j < nr; j++) d[j] = 0;
                }
            }
            else
            {
                int j0 = 0;
                // F32 columns eight at a time: eight contiguous runs of op(B)'s column (B's rows) transposed in registers.
                if (b.IsF32 && Avx.IsSupported)
                    for (; j0 + 8 <= cols; j0 += 8)
                        PackTransposed8((float*)b.Ptr + (long)(jc + jr + j0) * b.Ld + pc, b.Ld, kc, panel + j0, nr);
                for (int j = j0; j < nr; j++)
                {
                    if (j >= cols) { for (int p = 0; p < kc; p++) panel[p * nr + j] = 0; continue; }
                    long colBase = (long)(jc + jr + j) * b.Ld + pc;
                    if (b.IsF32) { float* src = (float*)b.Ptr + colBase; for (int p = 0; p < kc; p++) panel[p * nr + j] = src[p]; }
                    else for (int p = 0; p < kc; p++) panel[p * nr + j] = Load(b, colBase + p);
                }
            }
        }
    }

    /// <summary>
    /// dst[p·ldDst + j] = src[j·ldSrc + p] for j &lt; 8, p &lt; kc: eight rows of a transposed operand into eight columns
    /// of a B panel, 8×8 blocks transposed in AVX registers (the scalar loop cost a store per element, a third of an
    /// x·Wᵀ GEMM at 256 rows). The tail of kc (fewer than 8) is scalar.
    /// </summary>
    private static void PackTransposed8(float* src, long ldSrc, int kc, float* dst, int ldDst)
    {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            float* s0 = src + p;
            var r0 = Avx.LoadVector256(s0); var r1 = Avx.LoadVector256(s0 + ldSrc);
            var r2 = Avx.LoadVector256(s0 + 2 * ldSrc); var r3 = Avx.LoadVector256(s0 + 3 * ldSrc);
            var r4 = Avx.LoadVector256(s0 + 4 * ldSrc); var r5 = Avx.LoadVector256(s0 + 5 * ldSrc);
            var r6 = Avx.LoadVector256(s0 + 6 * ldSrc); var r7 = Avx.LoadVector256(s0 + 7 * ldSrc);
            Transpose8(ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7);
            float* d0 = dst + (long)p * ldDst;
            Avx.Store(d0, r0); Avx.Store(d0 + ldDst, r1); Avx.Store(d0 + 2 * ldDst, r2); Avx.Store(d0 + 3 * ldDst, r3);
            Avx.Store(d0 + 4 * ldDst, r4); Avx.Store(d0 + 5 * ldDst, r5); Avx.Store(d0 + 6 * ldDst, r6); Avx.Store(d0 + 7 * ldDst, r7);
        }
        for (; p < kc; p++)
            for (int j = 0; j < 8; j++) dst[(long)p * ldDst + j] = src[j * ldSrc + p];
    }

    /// <summary>
    /// Six rows of a row-major F32 A (row stride ld) into one MR-row panel, eight k at a time: the rows' 8-float runs
    /// are transposed in registers (two zero rows fill the 8×8), and k's eight lanes are stored at panel + 6k, their two
    /// surplus lanes overwritten by the next k's store. The last store's surplus lands past the panel, in the slack
    /// the A buffer keeps (see aBytes). The scalar loop (six passes of 4-byte stores 24 bytes apart) was 15 % of a
    /// 512³ GEMM's samples.
    /// </summary>
    private static void PackRows6(float* src, long ld, int kc, float alpha, float* panel)
    {
        var scale = Vector256.Create(alpha);
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            float* s = src + p;
            var r0 = Vector256.Load(s) * scale; var r1 = Vector256.Load(s + ld) * scale;
            var r2 = Vector256.Load(s + 2 * ld) * scale; var r3 = Vector256.Load(s + 3 * ld) * scale;
            var r4 = Vector256.Load(s + 4 * ld) * scale; var r5 = Vector256.Load(s + 5 * ld) * scale;
            var r6 = Vector256<float>.Zero; var r7 = Vector256<float>.Zero;
            Transpose8(ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7);
            float* d = panel + p * MR;
            r0.Store(d); r1.Store(d + 6); r2.Store(d + 12); r3.Store(d + 18);
            r4.Store(d + 24); r5.Store(d + 30); r6.Store(d + 36); r7.Store(d + 42);
        }
        for (; p < kc; p++)
            for (int i = 0; i < MR; i++) panel[p * MR + i] = alpha * src[i * ld + p];
    }

    /// <summary>
    /// Six consecutive columns of a row-major F32 A (op(A) = Aᵀ) into one MR-row panel: per k, a masked 8-lane load
    /// (lanes 6 and 7 masked off, so nothing past A's row is read) stored whole at panel + 6k; as in
    /// <see cref="PackRows6"/>, each store's two zero lanes are overwritten by the next and the last lands in slack.
    /// </summary>
    private static void PackColumns6(float* src, long ld, int kc, float alpha, float* panel)
    {
        var scale = Vector256.Create(alpha);
        var six = Vector256.Create(-1, -1, -1, -1, -1, -1, 0, 0).AsSingle();
        for (int p = 0; p < kc; p++, src += ld)
            (Avx.MaskLoad(src, six) * scale).Store(panel + p * MR);
    }

    /// <summary>Transposes the 8×8 block held in r0…r7 (row i in ri) in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(ref Vector256<float> r0, ref Vector256<float> r1, ref Vector256<float> r2, ref Vector256<float> r3,
        ref Vector256<float> r4, ref Vector256<float> r5, ref Vector256<float> r6, ref Vector256<float> r7)
    {
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        r0 = Avx.Permute2x128(u0, u4, 0x20); r1 = Avx.Permute2x128(u1, u5, 0x20);
        r2 = Avx.Permute2x128(u2, u6, 0x20); r3 = Avx.Permute2x128(u3, u7, 0x20);
        r4 = Avx.Permute2x128(u0, u4, 0x31); r5 = Avx.Permute2x128(u1, u5, 0x31);
        r6 = Avx.Permute2x128(u2, u6, 0x31); r7 = Avx.Permute2x128(u3, u7, 0x31);
    }

    private static void ScaleC(int m, int n, float beta, float* c, long ldc)
    {
        if (beta == 1) return;
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + i * ldc, n);
            if (beta == 0) row.Clear();
            else System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
        }
    }

    /// <summary>One micro-kernel call, accumulating (the gemm-blocking bench times it alone).</summary>
    internal static void MicroKernelProbe(int kc, float* a, float* b, float* c, long ldc) => MicroKernel(kc, a, b, c, ldc, false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MicroKernel(int kc, float* a, float* b, float* c, long ldc, bool store)
    {
        if (Wide) Kernel6x32(kc, a, b, c, ldc, store);
        else Kernel6x16(kc, a, b, c, ldc, store);
    }
}
