"""PhD loss, soft Canny, LPIPS structure and phase configs of the trainer (no UNets needed)."""

from __future__ import annotations

import pytest
import torch

from train.losses import (PhDConfig, PhDLoss, RandomInitPoseNetForTests, PoseFeatureLoss, SoftCanny, phd_phase_of,
                          predict_x0_from_v)
from train.lpips import LPIPS, RandomInitLPIPSForTests, build_lpips
from train.phases import DEFAULTS, apply_trainable, load_config, pose_dropout_at, trainable_names


def test_phd_phase_ranges():
    t = torch.arange(1000)
    ph = phd_phase_of(t)
    assert (ph[900:] == 0).all() and (ph[300:900] == 1).all() and (ph[:300] == 2).all()
    assert (ph == 0).sum() == 100 and (ph == 1).sum() == 600 and (ph == 2).sum() == 300


def _phd():
    return PhDLoss(PhDConfig(), PoseFeatureLoss(RandomInitPoseNetForTests()), RandomInitLPIPSForTests(), SoftCanny())


@pytest.mark.parametrize("t,active", [(999, "pose"), (900, "pose"), (899, "detail"), (300, "detail"),
                                      (299, "lpips"), (0, "lpips")])
def test_each_phd_term_only_in_its_timestep_range(t, active):
    torch.manual_seed(0)
    loss = _phd()
    pred = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    total, parts = loss(pred, target, torch.full((2,), t))
    for name in ("pose", "detail", "lpips"):
        if name == active:
            assert parts[name] > 0, (t, name)
        else:
            assert parts[name] == 0, (t, name)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # weight 0.1 on the active term
    assert torch.allclose(total, 0.1 * parts[active])


def test_phd_mixed_batch_averages_over_full_batch():
    loss = _phd()
    pred = torch.rand(3, 3, 32, 32) * 2 - 1
    target = torch.rand(3, 3, 32, 32) * 2 - 1
    t = torch.tensor([950, 500, 100])
    total, parts = loss(pred, target, t)
    singles = [loss(pred[i:i + 1], target[i:i + 1], t[i:i + 1])[0] for i in range(3)]
    assert torch.allclose(total, sum(singles) / 3, atol=1e-6)
    assert loss.needs_decode(t).all()
    loss.cfg.pose_weight = 0.0
    assert loss.needs_decode(t).tolist() == [False, True, True]


def test_soft_canny_edges_and_gradient():
    img = -torch.ones(1, 3, 32, 32)
    img[..., 8:24, 8:24] = 1.0
    img.requires_grad_(True)
    e = SoftCanny()(img)
    assert e.shape == (1, 1, 32, 32)
    assert 0 <= float(e.detach().min()) and float(e.detach().max()) <= 1
    assert e[0, 0, 16, 8].item() > 0.5 or e[0, 0, 16, 7].item() > 0.5  # on the square's border
    assert e[0, 0, 16, 16].item() < 0.05 and e[0, 0, 2, 2].item() < 0.05  # flat inside / outside
    e.sum().backward()
    assert img.grad.abs().sum() > 0


def test_lpips_layouts_match_torchvision_keys():
    vgg = LPIPS("vgg")
    keys = set(vgg.features.state_dict())
    assert {"0.weight", "2.weight", "5.weight", "28.weight", "28.bias"} <= keys
    assert vgg.features[28].weight.shape == (512, 512, 3, 3)
    assert [lin.weight.shape[1] for lin in vgg.lins] == [64, 128, 256, 512, 512]
    alex = LPIPS("alex")
    assert alex.features[0].weight.shape == (64, 3, 11, 11) and alex.features[10].weight.shape == (256, 256, 3, 3)
    assert [lin.weight.shape[1] for lin in alex.lins] == [64, 192, 384, 256, 256]
    # loading a torchvision-style state dict (classifier ignored) and lpips heads
    sd = {f"features.{k}": torch.randn_like(v) for k, v in alex.features.state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(1)
    alex.load_backbone(sd)
    alex.load_heads({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])})
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert alex(x, x).abs().item() < 1e-6
    assert alex(x, torch.rand(1, 3, 64, 64) * 2 - 1).item() > 0


def test_lpips_needs_local_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="local weight files"):
        build_lpips({"net": "alex"})
    with pytest.raises(FileNotFoundError, match="not found"):
        build_lpips({"net": "vgg", "backbone": str(tmp_path / "x.pth"), "heads": str(tmp_path / "y.pth")})
    assert isinstance(build_lpips({"net": "random_init_for_tests"}), RandomInitLPIPSForTests)


def test_predict_x0_from_v_inverts_the_forward_process():
    a = torch.linspace(0.999, 0.0, 1000)
    z0, eps = torch.randn(4, 4, 1, 8, 8), torch.randn(4, 4, 1, 8, 8)
    t = torch.tensor([0, 300, 700, 999])
    at = a[t].view(-1, 1, 1, 1, 1)
    zt = at.sqrt() * z0 + (1 - at).sqrt() * eps
    v = at.sqrt() * eps - (1 - at).sqrt() * z0
    assert torch.allclose(predict_x0_from_v(zt, v, a, t), z0, atol=1e-5)


def test_demo_model_configs_chain_into_one_recipe():
    """train/make_demo_model.sh: stage 1 -> 1b -> 1c (hue rotation) -> 2, each starting from the previous."""
    s1, s1b, s1c, s2 = (load_config(f"demo_stage{n}") for n in ("1", "1b", "1c", "2"))
    assert s1["init"]["from"] == "sd" and s1["phase"]["pose_parts"] == "hands" and s1["phase"]["audio"] == "global"
    assert s1b["init"]["weights_folder"].endswith("demo_stage1/export")
    assert s1c["init"]["weights_folder"].endswith("demo_stage1b/export")
    assert s2["init"]["weights_folder"].endswith("demo_stage1c/export")
    assert [c["data"]["hue_rotation"] for c in (s1, s1b, s1c, s2)] == [0.0, 0.0, 0.75, 0.0]
    assert s1c["phase"] == s1b["phase"] == s1["phase"] and s1c["data"]["resolution"] == 64
    assert s2["phase"]["trainable"] == ["denoising_unet.motion"] and s2["data"]["clip_frames"] == 12


def test_phase_configs_load_and_select_parameters():
    names = ["stage1_1_initial_pose", "stage1_2_pose_iterative", "stage1_3_lips", "stage1_4a_head_headshot",
             "stage1_4b_head_halfbody", "stage1_5_hands_global", "stage2_temporal", "finetune_official"]
    cfgs = {n: load_config(n) for n in names}
    assert cfgs["stage1_1_initial_pose"]["phase"]["audio"] == "muted"
    assert cfgs["stage1_2_pose_iterative"]["phase"]["pose_dropout"] == [0.0, 0.2]
    assert cfgs["stage1_3_lips"]["phase"]["region"] == "lips"
    assert cfgs["stage1_4a_head_headshot"]["data"]["kinds"] == ["headshot"]
    assert cfgs["stage1_5_hands_global"]["phase"]["pose_parts"] == "hands"
    s2 = cfgs["stage2_temporal"]
    assert s2["data"]["clip_frames"] == 24 and s2["run"]["max_steps"] == 30000
    for c in cfgs.values():
        assert c["optim"]["lr"] == 1e-5 and c["optim"]["per_device_batch"] == 4 and c["data"]["resolution"] == 768
    named = {"reference_unet": ["a.weight"], "pose_encoder": ["conv_in.weight"],
             "denoising_unet": ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                                "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                                "down_blocks.0.attentions.0.transformer_blocks.0.norm2.weight",
                                "down_blocks.0.resnets.0.norm2.weight",
                                "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"]}
    s1 = trainable_names(cfgs["stage1_1_initial_pose"]["phase"], named)
    assert s1["reference_unet"] == {"a.weight"} and s1["pose_encoder"] == {"conv_in.weight"}
    assert s1["denoising_unet"] == {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                                    "down_blocks.0.resnets.0.norm2.weight"}
    s3 = trainable_names(cfgs["stage1_3_lips"]["phase"], named)
    assert len(s3["denoising_unet"]) == 4
    s2n = trainable_names(s2["phase"], named)
    assert s2n["reference_unet"] == set() and s2n["pose_encoder"] == set()
    assert s2n["denoising_unet"] == {"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"}
    m = torch.nn.Linear(2, 2)
    apply_trainable({"trainable": [], "frozen": []}, {"pose_encoder": m})
    assert not any(p.requires_grad for p in m.parameters())


def test_pose_dropout_ramp_and_validation():
    ph = dict(DEFAULTS["phase"], pose_dropout=[0.0, 0.2])
    assert pose_dropout_at(ph, 0, 101) == 0.0
    assert abs(pose_dropout_at(ph, 50, 101) - 0.1) < 1e-9
    assert abs(pose_dropout_at(ph, 100, 101) - 0.2) < 1e-9
    with pytest.raises(ValueError):
        load_config(None, ["phase.audio=partial"])
    with pytest.raises(ValueError):
        load_config(None, ["data.clip_frames=4"])
    assert load_config("stage2_temporal", ["optim.lr=2e-5"])["optim"]["lr"] == 2e-5


def test_pose_loss_reads_the_live_pose_encoder_without_training_it():
    from echomimic_core.models import PoseEncoder

    from train.losses import build_pose_loss

    pe = PoseEncoder(32, 3, (8, 16, 16, 32))  # conv_out zero-initialised, as at the start of stage 1
    loss = build_pose_loss({"backbone": "pose_encoder"}, pe)
    assert not list(loss.parameters())  # not a copy, not a sub-module
    pred = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    per = loss(pred, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert per.shape == (2,) and (per > 1e-3).all()  # informative even with a zero conv_out
    per.sum().backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in pe.parameters())
    assert all(p.requires_grad for p in pe.parameters())


def test_lpips_gradient_is_finite_on_flat_images():
    lp = RandomInitLPIPSForTests()
    x = torch.full((1, 3, 64, 64), -1.0, requires_grad=True)  # dark flat image: many all-zero ReLU maps
    lp(x, torch.rand(1, 3, 64, 64) * 2 - 1).sum().backward()
    assert torch.isfinite(x.grad).all()
