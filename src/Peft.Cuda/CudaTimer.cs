using Peft.Cuda.Interop;

namespace Peft.Cuda;

/// <summary>
/// Times work queued on a device's stream with CUDA events (the only honest clock for asynchronous GPU work): warm-up
/// runs first (module load, cuBLAS heuristics and the allocator's first blocks stay out of the numbers), then the
/// median of many event-bracketed runs.
/// </summary>
public static class CudaTimer
{
    /// <summary>Median milliseconds of <paramref name="body"/> over <paramref name="repetitions"/> runs after <paramref name="warmup"/>.</summary>
    public static double MedianMilliseconds(CudaDevice device, Action body, int warmup = 10, int repetitions = 50)
    {
        for (int i = 0; i < warmup; i++) body();
        device.Synchronize();
        device.MakeCurrent();
        CudaDriver.Check(CudaDriver.cuEventCreate(out var start, CudaDriver.EventDefault), "cuEventCreate");
        CudaDriver.Check(CudaDriver.cuEventCreate(out var end, CudaDriver.EventDefault), "cuEventCreate");
        try
        {
            var times = new double[repetitions];
            for (int i = 0; i < repetitions; i++)
            {
                CudaDriver.Check(CudaDriver.cuEventRecord(start, device.Stream), "cuEventRecord");
                body();
                device.MakeCurrent();
                CudaDriver.Check(CudaDriver.cuEventRecord(end, device.Stream), "cuEventRecord");
                CudaDriver.Check(CudaDriver.cuEventSynchronize(end), "cuEventSynchronize");
                CudaDriver.Check(CudaDriver.cuEventElapsedTime(out float ms, start, end), "cuEventElapsedTime");
                times[i] = ms;
            }
            Array.Sort(times);
            return times[repetitions / 2];
        }
        finally
        {
            CudaDriver.cuEventDestroy_v2(start);
            CudaDriver.cuEventDestroy_v2(end);
        }
    }
}
