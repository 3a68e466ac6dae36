"""`plan/fit.py`'s search, step by step: the batches it simulates, in order, worked out by hand.

Written for the mutation run of `plan/fit.py` (docs/testing.md, "Third scoring"): `tests/test_fit.py` checks the
answers and bounds the number of simulations, which leaves the path to the answer (the first guess from a slope
hint, the secant steps, the gallop from either side) free to change. Each sequence below is the search's
documented rule applied by hand to a known peak function.
"""

from __future__ import annotations

import pytest

from vramplan.plan.fit import MAX_BATCH, FitCell, largest_fitting
from vramplan.plan.gpus import GpuSpec


def linear(n: int) -> int:
    return 1000 + 100 * n


def jump(n: int) -> int:
    """Linear to n = 10, then 3000 bytes more (a new allocator segment), plus a gentle curve."""
    return 1000 + 37 * n + (3000 if n > 10 else 0) + n * n // 50


def tried(peak_for, limit: int, **kw) -> tuple[int, list[int]]:
    found, peaks = largest_fitting(peak_for, limit, **kw)
    assert all(peaks[n] == peak_for(n) for n in peaks)
    return found, list(peaks)


@pytest.mark.parametrize("hint, sequence", [
    # 1 + (5000 - 1100) // 100 = 40 fits exactly; the secant guesses 40 again; 41 is over.
    (100, [1, 40, 41]),
    # 1 + 3900 // 50 = 79 (8900, over); secant through 1 and 79: slope 100, 79 - 39 = 40; then 41.
    (50, [1, 79, 40, 41]),
    # 1 + 3900 // 300 = 14 (2400); secant through 1 and 14: 14 + 2600 // 100 = 40; then 41.
    (300, [1, 14, 40, 41]),
    # no hint: n = 2 (1200); secant: 2 + 3800 // 100 = 40; then 41.
    (None, [1, 2, 40, 41]),
])
def test_a_slope_hint_replaces_the_probe_at_2(hint, sequence):
    assert tried(linear, 5000, slope_hint=hint) == (40, sequence)


def test_a_hint_that_guesses_below_2_probes_2():
    # 1 + 150 // 10**6 = 1 -> 2 (1200 fits); the secant lands on 2 again; 3 (1300) is over.
    assert tried(linear, 1250, slope_hint=10**6) == (2, [1, 2, 3])
    assert tried(linear, 1150, slope_hint=10**6) == (1, [1, 2])  # 2 (1200) is over: 1 is the answer
    assert tried(linear, 1150) == (1, [1, 2])


def test_a_hint_past_the_upper_bound_stops_there():
    assert tried(linear, 10**9, upper=100, slope_hint=100) == (100, [1, 100])
    assert tried(linear, 10**9, upper=1) == (1, [1])
    assert tried(linear, 1099) == (0, [1])  # batch 1 does not fit


def test_equal_peaks_look_eight_times_further():
    # Batches up to 10 share one 2048-byte block: 2 equals 1, so 16 is next (2600); secant through 2 and 16:
    # slope 552/15 = 36.8, 16 + 7400 // 36.8 = 217 (22700, over); through 16 and 217 (slope 100): 217 - 127 = 90
    # (10000, fits exactly); 91 is over.
    assert tried(lambda n: max(2048, 1000 + 100 * n), 10_000) == (90, [1, 2, 16, 217, 90, 91])
    # A flat peak up to the upper bound: 2, then 8 (the bound), a zero slope ends the secant, 8 is the answer.
    assert tried(lambda n: 2048, 10**9, upper=8) == (8, [1, 2, 8])


def test_gallop_down_from_the_nearer_side_then_bisect():
    # 1037, 1074; secant: 2 + 1926 // 37 = 54 (6056, over); through 2 and 54: 54 - 32 = 22 (4823, over); through
    # 54 and 22 the guess falls below 2 (2: simulated). Bracket (2, 22): 22 is nearer the limit (1823 over against
    # 1926 under), so gallop down: 21, 19, 15 (over), 7 (fits); bisect (7, 15): 11 over, 9 and 10 fit.
    assert tried(jump, 3000) == (10, [1, 2, 54, 22, 21, 19, 15, 7, 11, 9, 10])


def test_three_secant_steps_then_a_short_gallop_down():
    def steep(n: int) -> int:
        return 1000 + 100 * n + (20000 if n > 10 else 0) + n * n // 50

    # 1100, 1200; 2 + 23800 // 100 = 240 (46152, over); through 2 and 240 (slope 188.9): 240 - 112 = 128
    # (34127, over); through 240 and 128 (slope 107.4): 128 - 86 = 42 (25235, over): three secant steps.
    # Bracket (2, 42), 42 nearer the limit: gallop down 41 (over), 39 (fits); bisect: 40 is over.
    assert tried(steep, 25_000) == (39, [1, 2, 240, 128, 42, 41, 39, 40])
    assert steep(39) <= 25_000 < steep(40)


def test_gallop_up_from_the_nearer_side_then_bisect():
    # 1001, 1004; secant: 2 + 8996 // 3 = 3000 (over); through 2 and 3000 (slope 3002): 4 (fits); through 3000 and
    # 4 (slope 3004): 4 + 8984 // 3004 = 6 (fits). Bracket (6, 3000), 6 nearer the limit: gallop up 7, 9, 13, 21, 37,
    # 69 (fit), 133 (over); bisect (69, 133): 101 over, 85 and 93 fit, 97 and 95 over, 94 fits.
    assert tried(lambda n: 1000 + n * n, 10_000) == (94, [1, 2, 3000, 4, 6, 7, 9, 13, 21, 37, 69, 133, 101, 85, 93,
                                                          97, 95, 94])


def test_nothing_over_the_limit_yet_gallops_up_in_doubling_steps():
    # Peaks rounded up to 512-byte blocks, growing 3 bytes a sample: 1, 2 and 16 share a block, so 16, then 128;
    # every secant guess fits (the last, 40833), so the search gallops up from it in steps 1, 2, 4, ... until 40960
    # is over, then bisects.
    def blocks(n: int) -> int:
        return -(-(700 + 3 * n) // 512) * 512

    found, sequence = tried(blocks, 123_456)
    assert found == 40_897  # 241 blocks of 512 = 123392 >= 700 + 3n
    assert sequence[:5] == [1, 2, 16, 128, 30369]
    assert sequence[5:] == [40812, 40833, 40834, 40836, 40840, 40848, 40864, 40896, 40960, 40928, 40912, 40904,
                            40900, 40898, 40897]


def test_fit_cell_json_and_limit():
    gpu = GpuSpec(name="t4", label="NVIDIA T4", memory_bytes=16 * 2**30, vendor="nvidia", compute_capability="7.5",
                  sm_count=40, bf16=False, fp8=False)
    cell = FitCell(gpu=gpu, mode="inference", dtype="float16", attn="sdpa", image_size=(224, 224), seq_len=None,
                   largest_batch_size=12, peak_device_bytes=15 * 2**30, memory_bytes=16 * 2**30,
                   headroom_bytes=2**30, simulations=5, cheapest_precision="float32")
    assert cell.limit_bytes == 15 * 2**30
    assert cell.as_json() == {
        "gpu": "t4", "mode": "inference", "image_size": [224, 224], "largest_batch_size": 12,
        "peak_device_bytes": 15 * 2**30, "memory_bytes": 16 * 2**30, "headroom_bytes": 2**30, "dtype": "float16",
        "attn": "sdpa", "cheapest_precision": "float32", "simulations": 5,
    }
    text = FitCell(gpu=gpu, mode="inference", dtype="float16", attn="sdpa", image_size=None, seq_len=512,
                   largest_batch_size=0, peak_device_bytes=1, memory_bytes=2, headroom_bytes=0, simulations=1,
                   largest_image_size=0, error="it broke")
    entry = text.as_json()
    assert entry["seq_len"] == 512 and "image_size" not in entry
    assert entry["largest_image_size"] == 0 and entry["error"] == "it broke" and entry["cheapest_precision"] is None
    assert MAX_BATCH == 65536


def test_a_hint_past_the_answer_falls_back_to_the_secant():
    # 1 + 150 // 60 = 3 (1300, over): not the probe at 2, so the search goes on; secant through 1 and 3 (slope
    # 100): 3 - 1 = 2 (1200, fits); the bracket (2, 3) settles it.
    assert tried(linear, 1250, slope_hint=60) == (2, [1, 3, 2])


def test_a_slope_under_one_byte_a_sample_still_takes_secant_steps():
    # 1000 + n // 2: 1000, 1001: slope 1, 2 + 99 = 101 (1050); through 2 and 101 (slope 0.495): 101 + 101 = 202
    # (1101, over); through 101 and 202 (slope 0.505): 202 - 2 = 200 (1100, fits); gallop up: 201 fits.
    assert tried(lambda n: 1000 + n // 2, 1100) == (201, [1, 2, 101, 202, 200, 201])


def test_the_gallop_up_stays_below_the_bracket():
    def step(n: int) -> int:
        return 1000 + 100 * n + (3000 if n > 10 else 0) + n * n // 50

    # 1 + 1900 // 50 = 39 (7930, over); secant: 11 (5102, over), then below 2 (2: 1200), then 2 + 1800 // 433.6
    # = 6 (1600). Bracket (6, 11), 6 nearer: gallop up 7, 9, then min(10, 13) = 10 (2002, fits): 10.
    assert tried(step, 3000, slope_hint=50) == (10, [1, 39, 11, 2, 6, 7, 9, 10])


def test_the_gallop_down_stays_above_the_bracket():
    def blocks(n: int) -> int:
        return -(-(1000 + 7 * n) // 256) * 256

    # The hint's 1 + 226 // 300 = 1 is raised to 2 (1024, as 1); equal peaks: 16 (1280, over); secant through 1 and
    # 16: 14 (over); through 16 and 14 the slope is 0. Bracket (2, 14), 14 nearer: 13, 11, 7 (over), then
    # max(3, 7 - 8) = 3 (fits); bisect: 5 and 4 over.
    assert tried(blocks, 1250, slope_hint=300) == (3, [1, 2, 16, 14, 13, 11, 7, 3, 5, 4])
