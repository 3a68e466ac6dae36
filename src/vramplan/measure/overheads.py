"""What a CUDA device adds on top of tensor bytes: allocator blocks and segments, library workspaces, context.

`torch.cuda.max_memory_allocated` counts allocator *blocks*, not tensor bytes, and the card
holds *segments* (`max_memory_reserved`) plus the CUDA context. This module models both for the
simulated target, an H100 (sm90) running PyTorch's default configuration.

Sources (read from PyTorch's source on GitHub, quoted by path; the commits read are given so
the numbers can be checked against a later release):

- `c10/cuda/CUDACachingAllocator.cpp` (pytorch/pytorch@eb42ad6eca0c): `kMinBlockSize`,
  `kSmallSize`, `kSmallBuffer`, `kMinLargeAlloc`, `kRoundLarge`, `kLargeBuffer`; `round_size`,
  `get_allocation_size`, `should_split`, best-fit `get_free_block` over blocks ordered by
  (size, address), merging of freed neighbours, and `allocated_bytes += block->size` (a block
  that is not split counts whole).
- `aten/src/ATen/cuda/CublasHandlePool.cpp` (pytorch/pytorch@26a39059ec58:
  `parseChosenWorkspaceSize`, `getCUDABlasLtWorkspaceSize`, `getNewWorkspace`): cuBLAS keeps one
  workspace per (handle, stream), allocated *through the caching allocator* and never freed, so
  it shows in `max_memory_allocated`; default size ":4096:8" (32 MiB) on sm90. cuBLASLt has its
  own 1 MiB workspace unless `TORCH_CUBLASLT_UNIFIED_WORKSPACE=1`.

Known limitations:
    - Default allocator settings only: `PYTORCH_CUDA_ALLOC_CONF` options (expandable_segments,
      max_split_size_mb, roundup_power2_divisions) and `CUBLAS_WORKSPACE_CONFIG` are not read.
    - One stream. Allocations on side streams and `record_stream` delays are not modelled.
    - Unlimited device memory: when cudaMalloc fails, the real allocator frees its cached
      segments and retries, so near the card's capacity it reserves less than modelled here.
    - cuDNN convolution workspaces (allocated through the caching allocator for the call) are not
      modelled: their size depends on the algorithm cuDNN picks on the device.
    - The CUDA context is an estimate (see `CUDA_CONTEXT_BYTES`); `bench/validate_gpu.py`
      measures it on the device it runs on and records it in `docs/accuracy.md`.
    - Other cards than the H100 (`cuda_context_bytes`): the context is scaled by the card's SM
      count and resident threads per SM from the H100 figure, an estimate not checked on those cards.
    - ROCm cards: hipBLAS/hipBLASLt workspaces follow PyTorch's ROCm defaults; the allocator is
      modelled as CUDA's (PyTorch HIPifies the same CUDACachingAllocator.cpp); the HIP context is
      given the H100 figure; AOTriton's own attention workspaces are modelled as FlashAttention-2's.
"""

from __future__ import annotations

from bisect import bisect_left, insort

MiB = 1024 * 1024

# --- c10/cuda/CUDACachingAllocator.cpp -------------------------------------------------------
MIN_BLOCK_SIZE = 512  # kMinBlockSize: every request is rounded up to a multiple of 512 bytes
SMALL_SIZE = 1 * MiB  # kSmallSize: requests up to 1 MiB come from the small pool
SMALL_BUFFER = 2 * MiB  # kSmallBuffer: small-pool segments are 2 MiB
MIN_LARGE_ALLOC = 10 * MiB  # kMinLargeAlloc: requests in (1 MiB, 10 MiB) get a 20 MiB segment
LARGE_BUFFER = 20 * MiB  # kLargeBuffer
ROUND_LARGE = 2 * MiB  # kRoundLarge: requests of 10 MiB and more are rounded up to 2 MiB

# --- aten/src/ATen/cuda/CublasHandlePool.cpp -------------------------------------------------
# parseChosenWorkspaceSize: "4096 * 8 * 1024" bytes when `major == 9 && minor == 0` (Hopper).
CUBLAS_WORKSPACE_BYTES = 4096 * 8 * 1024
# parseCUDABlasLtWorkspaceSize: "size_t workspace_size = 1024; /* default size in KiB */".
CUBLASLT_WORKSPACE_BYTES = 1024 * 1024

# --- CUDA context ----------------------------------------------------------------------------
# Device memory the driver holds for the process before any tensor exists: the context itself,
# the kernel images loaded for the run (lazy loading, CUDA_MODULE_LOADING=LAZY, is the default
# since CUDA 11.7 / PyTorch 2.0) and the cuBLAS/cuDNN handles. Not visible to the caching
# allocator; torch's own docs only say "some context needs to be created on GPU"
# (torch.cuda.memory_allocated). 500 MiB is the usual nvidia-smi reading for a PyTorch process
# on an H100 with CUDA 12 after a first matmul; validate_gpu.py measures it and reports the value.
CUDA_CONTEXT_BYTES = 500 * MiB


# --- per target card (plan/gpus.py) ----------------------------------------------------------
# CublasHandlePool.cpp (pytorch/pytorch main, 2025: parseChosenWorkspaceSize): ":4096:2:16:8 default,
# 32MiB for Hopper and Blackwell" -- `properties->major == 9 || major == 10 || major == 12` gives
# 4096 * 8 * 1024, every other CUDA card 4096 * 1024 * 2 + 16 * 1024 * 8 (8 MiB + 128 KiB).
# Under ROCm the same function gives 32 MiB, 128 MiB on gfx94x/gfx95x (MI300), and
# parseCUDABlasLtWorkspaceSize gives hipBLASLt "76 MB" (76 * 1024 KiB).
CUBLAS_WORKSPACE_PRE_HOPPER_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8
HIPBLAS_WORKSPACE_BYTES = 1024 * 32 * 1024
HIPBLAS_WORKSPACE_GFX94_BYTES = 1024 * 128 * 1024
HIPBLASLT_WORKSPACE_BYTES = 76 * 1024 * 1024
# The CUDA context estimate splits CUDA_CONTEXT_BYTES (an H100 reading) into the part that scales
# with the card, the local-memory reserve the driver makes for every resident thread (default stack
# of 1 KiB per thread, cudaLimitStackSize), and the rest (driver, kernel images, handles), kept
# fixed. An estimate: bench/validate_gpu.py measures the context on the card it runs on.
STACK_BYTES_PER_THREAD = 1024
_H100_LOCAL_MEMORY = 132 * 2048 * STACK_BYTES_PER_THREAD
CONTEXT_FIXED_BYTES = CUDA_CONTEXT_BYTES - _H100_LOCAL_MEMORY


def cublas_workspace_bytes(gpu) -> int:
    """The cuBLAS (hipBLAS) workspace PyTorch allocates on the first GEMM on this card."""
    if gpu.rocm:
        return HIPBLAS_WORKSPACE_GFX94_BYTES if gpu.compute_capability.startswith(("gfx94", "gfx95")) \
            else HIPBLAS_WORKSPACE_BYTES
    return CUBLAS_WORKSPACE_BYTES if gpu.capability[0] in (9, 10, 12) else CUBLAS_WORKSPACE_PRE_HOPPER_BYTES


def cublaslt_workspace_bytes(gpu) -> int:
    """The cuBLASLt (hipBLASLt) workspace of the first GEMM with a bias epilogue."""
    return HIPBLASLT_WORKSPACE_BYTES if gpu.rocm else CUBLASLT_WORKSPACE_BYTES


def cuda_context_bytes(gpu) -> int:
    """Estimated context on this card: a fixed part plus the per-thread local-memory reserve.

    On ROCm the H100 figure is kept: the HIP runtime's context is not modelled per architecture.
    """
    if gpu.rocm:
        return CUDA_CONTEXT_BYTES
    return CONTEXT_FIXED_BYTES + gpu.sm_count * gpu.max_threads_per_sm * STACK_BYTES_PER_THREAD


def round_block(nbytes: int) -> int:
    """Round a request to the size of the block the caching allocator hands out (round_size)."""
    if nbytes < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    return -(-nbytes // MIN_BLOCK_SIZE) * MIN_BLOCK_SIZE


def segment_size(block_size: int) -> int:
    """Size of the segment cudaMalloc'd for a block no cached segment can hold (get_allocation_size)."""
    if block_size <= SMALL_SIZE:
        return SMALL_BUFFER
    if block_size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-block_size // ROUND_LARGE) * ROUND_LARGE


class Block:
    """A piece of a segment: allocated to a tensor, or free and cached."""

    __slots__ = ("size", "addr", "small", "allocated", "prev", "next")

    def __init__(self, size: int, addr: int, small: bool) -> None:
        self.size = size
        self.addr = addr
        self.small = small
        self.allocated = False
        self.prev: Block | None = None
        self.next: Block | None = None


class CachingAllocatorModel:
    """Replay allocations and frees as PyTorch's CUDACachingAllocator would serve them.

    Tracks the two numbers torch reports: `allocated` (sum of allocated block sizes, what
    `memory_allocated` shows) and `reserved` (sum of segment sizes, `memory_reserved`), with peaks.
    """

    def __init__(self) -> None:
        # Free blocks per pool (small, large), kept sorted by (size, address) like BlockComparatorSize.
        self._free: dict[bool, list[tuple[int, int, Block]]] = {True: [], False: []}
        self._next_addr = 0
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0

    def malloc(self, nbytes: int) -> Block | None:
        """Serve a request of `nbytes`; None for an empty tensor, which takes no block."""
        if nbytes == 0:
            return None
        size = round_block(nbytes)
        small = size <= SMALL_SIZE
        block = self._take_free(size, small) or self._new_segment(size, small)
        remaining = block.size - size
        if remaining >= MIN_BLOCK_SIZE if small else remaining > SMALL_SIZE:  # should_split
            rest = Block(remaining, block.addr + size, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)
        block.allocated = True
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: Block) -> None:
        """Return a block to its pool, merging it with free neighbours of the same segment."""
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                self._remove_free(neighbour)
                if neighbour is block.prev:
                    block.addr = neighbour.addr
                    block.prev = neighbour.prev
                    if block.prev is not None:
                        block.prev.next = block
                else:
                    block.next = neighbour.next
                    if block.next is not None:
                        block.next.prev = block
                block.size += neighbour.size
        self._insert_free(block)

    def _take_free(self, size: int, small: bool) -> Block | None:
        pool = self._free[small]
        i = bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        return pool.pop(i)[2]

    def _new_segment(self, size: int, small: bool) -> Block:
        seg = segment_size(size)
        block = Block(seg, self._next_addr, small)
        self._next_addr += seg
        self.reserved += seg
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return block

    def _insert_free(self, block: Block) -> None:
        insort(self._free[block.small], (block.size, block.addr, block), key=lambda e: e[:2])

    def _remove_free(self, block: Block) -> None:
        pool = self._free[block.small]
        i = bisect_left(pool, (block.size, block.addr), key=lambda e: e[:2])
        del pool[i]
