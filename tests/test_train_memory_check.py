"""train/memory_check.py: one real small training step measured on the CPU vs estimate.py's count."""

from __future__ import annotations

import pytest
import torch

from train import memory_check as MC

# narrower than the module's default small size; GroupNorm(32) everywhere and a 1x1 latent at the last level
# at 64 px need >= 64 channels there
TINY = {"unet": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32},
        "pose": MC.SMALL_POSE,
        "vae": {"block_out_channels": [16, 16, 16, 16], "layers_per_block": 1, "latent_channels": 4,
                "norm_num_groups": 16}}


@pytest.mark.slow
@pytest.mark.parametrize("stage,frames,phd,amp", [(1, 1, True, True), (2, 2, False, False)])
def test_measured_step_is_positive_and_near_the_count(stage, frames, phd, amp):
    r = MC.compare(64, frames, stage, phd, amp=amp, layout=TINY)
    assert r["peak_bytes"] > 0 and r["saved_bytes"] > 0
    # the tensors saved for backward are alive at the end of the forward; the peak holds at least that
    assert r["saved_bytes"] <= r["forward_end_bytes"] <= r["peak_bytes"]
    assert r["counted_bytes"] > r["counted_activation_bytes"] > 0  # some saved tensors are weights
    assert 0.2 < r["ratio"] < 5.0, r  # same code path, so within a sane factor of the estimator


@pytest.mark.slow
def test_the_measured_step_trains_the_stage_2_tensors_only():
    ref, den, pose, vae = nets = MC.small_networks(layout=TINY)
    MC.measure(64, 2, 2, False, amp=False, nets=nets)
    mm = {id(p) for _, p in den.named_motion_module_parameters()}
    params = [p for m in (ref, den, pose, vae) for p in m.parameters()]
    assert sum(float(p.grad.abs().sum()) for p in params if id(p) in mm) > 0  # the backward reached them
    assert all(p.grad is None for p in params if id(p) not in mm)


def test_profiler_peak_is_the_highest_live_sum():
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.empty(2 ** 18)  # 1 MiB
        b = torch.empty(2 ** 19)  # 2 MiB: 3 MiB live
        del a
        c = torch.empty(2 ** 18)  # 1 MiB: 3 MiB live again, the peak stays 3
        del b, c
    assert MC._peak_of(prof) == 3 * 2 ** 20


def test_slope_fit_recovers_a_line_and_reports_the_misfit():
    b, a, err = MC._slope([4096, 16384, 36864], [3 + 2 * x for x in (4096, 16384, 36864)])
    assert (round(b, 9), round(a, 6), round(err, 9)) == (2, 3, 0)
    assert MC._slope([1, 2, 3], [1, 3, 2])[2] > 0.1
