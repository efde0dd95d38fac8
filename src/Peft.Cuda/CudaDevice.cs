using System.Collections.Concurrent;
using System.Text;
using Peft.Core;
using Peft.Cuda.Interop;
using Peft.Cuda.Kernels;
using Peft.Cuda.Memory;

namespace Peft.Cuda;

/// <summary>
/// One CUDA device as Peft.Cuda drives it: its primary context (shared with cuBLAS and any other library in the
/// process), one non-blocking stream that every operation is queued on, the caching allocator, the cuBLAS handle and
/// the kernel module. Obtained with <see cref="Get"/>; lives for the process (the primary context is released at exit).
/// </summary>
public sealed class CudaDevice
{
    private static readonly ConcurrentDictionary<int, CudaDevice> Devices = new();
    private static readonly Lazy<(bool Ok, string Reason)> Init = new(Initialize);
    private readonly Lazy<IntPtr> _blas;
    private readonly Lazy<KernelModule> _kernels;
    private readonly Lazy<PinnedStaging> _staging;
    private readonly Lazy<(IntPtr Stream, IntPtr Blas, IntPtr Forked, IntPtr Joined)> _side;

    private CudaDevice(int index)
    {
        Index = index;
        CudaDriver.Check(CudaDriver.cuDeviceGet(out int handle, index), $"cuDeviceGet({index})");
        Handle = handle;
        Name = ReadName(handle);
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int major, CudaDriver.AttrComputeCapabilityMajor, handle), "cuDeviceGetAttribute(major)");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int minor, CudaDriver.AttrComputeCapabilityMinor, handle), "cuDeviceGetAttribute(minor)");
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int sms, CudaDriver.AttrMultiprocessorCount, handle), "cuDeviceGetAttribute(multiprocessors)");
        CudaDriver.Check(CudaDriver.cuDeviceTotalMem_v2(out nuint total, handle), "cuDeviceTotalMem_v2");
        ComputeCapability = (major, minor);
        MultiprocessorCount = sms;
        TotalMemoryBytes = (long)total;
        CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRetain(out var context, handle), "cuDevicePrimaryCtxRetain");
        Context = context;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuStreamCreate(out var stream, CudaDriver.StreamNonBlocking), "cuStreamCreate");
        Stream = stream;
        Allocator = new CudaAllocator(this);
        _blas = new Lazy<IntPtr>(CreateBlas);
        _kernels = new Lazy<KernelModule>(() => KernelModule.Load(this));
        _staging = new Lazy<PinnedStaging>(() => new PinnedStaging(this));
        _side = new Lazy<(IntPtr, IntPtr, IntPtr, IntPtr)>(CreateSide);
    }

    /// <summary>Device number.</summary>
    public int Index { get; }
    /// <summary>This device as a tensor placement.</summary>
    public Device Device => Device.Cuda(Index);
    /// <summary>Marketing name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }
    /// <summary>SM version, e.g. (9, 0).</summary>
    public (int Major, int Minor) ComputeCapability { get; }
    /// <summary>Streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }
    /// <summary>Device memory in bytes.</summary>
    public long TotalMemoryBytes { get; }
    /// <summary>The caching allocator of this device.</summary>
    public CudaAllocator Allocator { get; }
    /// <summary>float32 GEMMs may use TF32 tensor cores (≈1e-3 relative error instead of ≈1e-6). Off by default, as in PyTorch.</summary>
    public bool AllowTf32 { get; set; }

    internal int Handle { get; }
    internal IntPtr Context { get; }
    internal IntPtr Stream { get; }
    internal IntPtr Blas => _blas.Value;
    /// <summary>The side lane's cuBLAS handle (its own workspace: two handles never share one across streams).</summary>
    internal IntPtr SideBlas => _side.Value.Blas;
    internal IntPtr SideStream => _side.Value.Stream;
    internal KernelModule Kernels => _kernels.Value;
    internal PinnedStaging Staging => _staging.Value;

    /// <summary>True when a CUDA driver and at least one device exist; otherwise <paramref name="reason"/> says what is missing.</summary>
    public static bool IsAvailable(out string reason)
    {
        (bool ok, reason) = Init.Value;
        return ok;
    }

    /// <summary>Number of CUDA devices (0 without a driver).</summary>
    public static int Count => IsAvailable(out _) && CudaDriver.cuDeviceGetCount(out int n) == 0 ? n : 0;

    /// <summary>Device <paramref name="index"/>; throws <see cref="InvalidOperationException"/> with the reason when CUDA is unavailable.</summary>
    public static CudaDevice Get(int index = 0)
    {
        if (!IsAvailable(out var reason)) throw new InvalidOperationException($"CUDA is not available: {reason}");
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), $"cuda:{index} does not exist ({Count} CUDA device(s))");
        return Devices.GetOrAdd(index, i => new CudaDevice(i));
    }

    /// <summary>Binds this device's context to the calling thread (every entry point calls it; cheap when already bound).</summary>
    public void MakeCurrent() => CudaDriver.Check(CudaDriver.cuCtxSetCurrent(Context), "cuCtxSetCurrent");

    /// <summary>Waits until everything queued on this device's stream has run.</summary>
    public void Synchronize()
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuStreamSynchronize(Stream), "cuStreamSynchronize");
    }

    /// <summary>
    /// Opens a side lane: work queued on the side stream after this call starts once everything queued on the main
    /// stream so far has run, and may then overlap later main-stream work (a memory-bound thin GEMM beside a
    /// compute-bound one). Every fork must be closed by <see cref="Join"/> before its tensors are freed: the caching
    /// allocator reuses a block at once, which is safe only for work ordered on the main stream.
    /// </summary>
    internal void Fork()
    {
        var side = _side.Value;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuEventRecord(side.Forked, Stream), "cuEventRecord(fork)");
        CudaDriver.Check(CudaDriver.cuStreamWaitEvent(side.Stream, side.Forked, 0), "cuStreamWaitEvent(fork)");
    }

    /// <summary>Closes the side lane: main-stream work queued after this call waits for everything queued on the side.</summary>
    internal void Join()
    {
        var side = _side.Value;
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuEventRecord(side.Joined, side.Stream), "cuEventRecord(join)");
        CudaDriver.Check(CudaDriver.cuStreamWaitEvent(Stream, side.Joined, 0), "cuStreamWaitEvent(join)");
    }

    /// <summary>(free, total) device memory as the driver reports it.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemGetInfo_v2(out var free, out var total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    /// <summary>The driver's CUDA version, e.g. 13000.</summary>
    public static int DriverVersion => IsAvailable(out _) && CudaDriver.cuDriverGetVersion(out int v) == 0 ? v : 0;

    /// <inheritdoc/>
    public override string ToString() => $"cuda:{Index} ({Name}, sm_{ComputeCapability.Major}{ComputeCapability.Minor})";

    private static (bool, string) Initialize()
    {
        try
        {
            int status = CudaDriver.cuInit(0);
            if (status == 100) return (false, "the CUDA driver found no device (CUDA_ERROR_NO_DEVICE)");
            if (status != 0) return (false, $"cuInit failed: {CudaDriver.ErrorName(status)} ({status}): {CudaDriver.ErrorText(status)}");
            CudaDriver.Check(CudaDriver.cuDeviceGetCount(out int n), "cuDeviceGetCount");
            return n > 0 ? (true, "") : (false, "the CUDA driver reports 0 devices");
        }
        catch (DllNotFoundException e)
        {
            return (false, e.Message);
        }
    }

    private static unsafe string ReadName(int handle)
    {
        byte* buffer = stackalloc byte[256];
        CudaDriver.Check(CudaDriver.cuDeviceGetName(buffer, 256, handle), "cuDeviceGetName");
        int length = 0;
        while (length < 256 && buffer[length] != 0) length++;
        return Encoding.UTF8.GetString(buffer, length);
    }

    private IntPtr CreateBlas() => CreateBlas(Stream);

    private IntPtr CreateBlas(IntPtr stream)
    {
        MakeCurrent();
        CuBlas.Check(CuBlas.cublasCreate_v2(out var handle), "cublasCreate_v2");
        CuBlas.Check(CuBlas.cublasSetStream_v2(handle, stream), "cublasSetStream_v2");
        return handle;
    }

    private (IntPtr, IntPtr, IntPtr, IntPtr) CreateSide()
    {
        MakeCurrent();
        CudaDriver.Check(CudaDriver.cuStreamCreate(out var stream, CudaDriver.StreamNonBlocking), "cuStreamCreate(side)");
        CudaDriver.Check(CudaDriver.cuEventCreate(out var forked, CudaDriver.EventDisableTiming), "cuEventCreate(fork)");
        CudaDriver.Check(CudaDriver.cuEventCreate(out var joined, CudaDriver.EventDisableTiming), "cuEventCreate(join)");
        return (stream, CreateBlas(stream), forked, joined);
    }
}
