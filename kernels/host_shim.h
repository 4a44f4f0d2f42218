// Host shim: compile the CUDA kernels of kernels/*.cu as plain C++ so CI can run them on the CPU.
//
// kernels/host_build.py generates a translation unit that includes this header, then the .cu file, then one
// `extern "C"` launcher per kernel that calls shim_launch(grid, block, [&] { kernel(args...); }).
//
// Emulation: blockIdx / threadIdx / blockDim / gridDim are thread-local variables; shim_launch runs every block
// and, inside a block, every thread one after another. That is exact for kernels in which a thread never waits
// for another thread of its block, which is why this header deliberately refuses __shared__ and __syncthreads
// (a compile error names the rule). Atomics are real atomics, so a caller may also run blocks concurrently
// (the pragma below does when built with -fopenmp; host_build.py does not, see there why). Float arithmetic: build with -ffp-contract=off and
// without -ffast-math so results match NVRTC's --fmad=false bit for bit.
#pragma once

#include <math.h>

struct dim3 {
    unsigned int x, y, z;
};

static thread_local dim3 blockIdx = {0, 0, 0};
static thread_local dim3 threadIdx = {0, 0, 0};
static thread_local dim3 blockDim = {1, 1, 1};
static thread_local dim3 gridDim = {1, 1, 1};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ SHIM_ERROR_no_shared_memory_in_kernels_see_host_shim_h
void __syncthreads() = delete;  // kernels must not synchronise threads of a block (see the header comment)

static inline int atomicAdd(int* address, int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

// Run `body` once per (block, thread) of the launch, with the index variables set as on the GPU.
template <class Body>
static void shim_launch(dim3 grid, dim3 block, Body body) {
    const long long blocks = (long long)grid.x * grid.y * grid.z;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
    for (long long b = 0; b < blocks; ++b) {
        gridDim = grid;
        blockDim = block;
        blockIdx.x = (unsigned int)(b % grid.x);
        blockIdx.y = (unsigned int)((b / grid.x) % grid.y);
        blockIdx.z = (unsigned int)(b / ((long long)grid.x * grid.y));
        for (unsigned int tz = 0; tz < block.z; ++tz)
            for (unsigned int ty = 0; ty < block.y; ++ty)
                for (unsigned int tx = 0; tx < block.x; ++tx) {
                    threadIdx.x = tx;
                    threadIdx.y = ty;
                    threadIdx.z = tz;
                    body();
                }
    }
}
