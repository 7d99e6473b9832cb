"""Whisper encoder loading (openai tiny.pt vs Hugging Face folders), an independent openai-style reference
forward, long (> 30 s) clips, dtypes and checkpoint errors. Tiny random weights only; no download."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echomimic_core.audio import (
    chunk_count,
    encode_audio,
    feature_positions,
    frame_chunks,
    load_audio_encoder,
    log_mel,
    openai_to_hf_encoder_key,
)
from echomimic_core.audio.mel import mel_segments
from echomimic_core.errors import CheckpointError, ModelFilesNotFoundError

D_MODEL, HEADS, LAYERS, FFN = 32, 2, 2, 64


def _hf_config(layers=LAYERS):
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=D_MODEL,
        encoder_layers=layers,
        encoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_layers=1,
        decoder_attention_heads=HEADS,
        decoder_ffn_dim=FFN,
        max_source_positions=1500,
        max_target_positions=8,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )


def _hf_to_openai(key: str) -> str | None:
    """Inverse of the encoder key map, written independently for the test."""
    if not key.startswith("model.encoder."):
        return None
    rest = key[len("model.encoder.") :]
    table = {
        "self_attn.q_proj": "attn.query",
        "self_attn.k_proj": "attn.key",
        "self_attn.v_proj": "attn.value",
        "self_attn.out_proj": "attn.out",
        "self_attn_layer_norm": "attn_ln",
        "fc1": "mlp.0",
        "fc2": "mlp.2",
        "final_layer_norm": "mlp_ln",
    }
    if rest == "embed_positions.weight":
        return "encoder.positional_embedding"
    if rest.startswith("layer_norm."):
        return "encoder.ln_post." + rest.split(".", 1)[1]
    if rest.startswith("layers."):
        _, i, tail = rest.split(".", 2)
        name, param = tail.rsplit(".", 1)
        return f"encoder.blocks.{i}.{table[name]}.{param}"
    return "encoder." + rest


@pytest.fixture(scope="module")
def random_whisper(tmp_path_factory):
    """The same random weights as a HF WhisperForConditionalGeneration folder (save_pretrained), a
    WhisperModel folder with pytorch_model.bin, and an openai-format tiny.pt (with decoder keys)."""
    from transformers import WhisperForConditionalGeneration, WhisperModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("whisper")
    model = WhisperForConditionalGeneration(_hf_config()).eval()
    with torch.no_grad():  # make norms/biases non-trivial so a wrong mapping shows
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(root / "hf_cg")
    model.save_pretrained(root / "hf_sharded", max_shard_size="200KB")
    base = WhisperModel(_hf_config()).eval()
    base.load_state_dict({k[len("model.") :]: v for k, v in model.state_dict().items() if k.startswith("model.")})
    base.save_pretrained(root / "hf_base", safe_serialization=False)

    state = {}
    for key, value in model.state_dict().items():
        new = _hf_to_openai(key)
        if new is not None:
            state[new] = value.clone()
    state["decoder.token_embedding.weight"] = torch.randn(100, D_MODEL)
    state["decoder.ln.weight"] = torch.ones(D_MODEL)
    dims = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=D_MODEL, n_audio_head=HEADS, n_audio_layer=LAYERS,
                n_vocab=100, n_text_ctx=8, n_text_state=D_MODEL, n_text_head=HEADS, n_text_layer=1)
    (root / "openai").mkdir()
    torch.save({"dims": dims, "model_state_dict": state}, root / "openai" / "tiny.pt")
    half = {k: v.half() for k, v in state.items()}
    torch.save({"dims": dims, "model_state_dict": half}, root / "openai" / "tiny_fp16.pt")
    return {"root": root, "state": state, "dims": dims}


def _reference_states(state: dict, dims: dict, segment: torch.Tensor) -> torch.Tensor:
    """openai-whisper AudioEncoder math written out (q and k each scaled by d^-0.25), float64,
    returning [n_layer+1, 1500, D] states before ln_post."""
    s = {k: v.double() for k, v in state.items() if k.startswith("encoder.")}
    x = segment.double()[None]
    x = F.gelu(F.conv1d(x, s["encoder.conv1.weight"], s["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, s["encoder.conv2.weight"], s["encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + s["encoder.positional_embedding"]
    out = [x]
    h = dims["n_audio_head"]
    for i in range(dims["n_audio_layer"]):
        p = f"encoder.blocks.{i}."
        y = F.layer_norm(x, (x.shape[-1],), s[p + "attn_ln.weight"], s[p + "attn_ln.bias"])
        q = y @ s[p + "attn.query.weight"].T + s[p + "attn.query.bias"]
        k = y @ s[p + "attn.key.weight"].T
        v = y @ s[p + "attn.value.weight"].T + s[p + "attn.value.bias"]
        b, t, d = q.shape
        scale = (d // h) ** -0.25
        q = q.view(b, t, h, -1).permute(0, 2, 1, 3) * scale
        k = k.view(b, t, h, -1).permute(0, 2, 3, 1) * scale
        v = v.view(b, t, h, -1).permute(0, 2, 1, 3)
        a = torch.softmax(q @ k, dim=-1) @ v
        a = a.permute(0, 2, 1, 3).reshape(b, t, d)
        x = x + a @ s[p + "attn.out.weight"].T + s[p + "attn.out.bias"]
        y = F.layer_norm(x, (x.shape[-1],), s[p + "mlp_ln.weight"], s[p + "mlp_ln.bias"])
        y = F.gelu(y @ s[p + "mlp.0.weight"].T + s[p + "mlp.0.bias"]) @ s[p + "mlp.2.weight"].T + s[p + "mlp.2.bias"]
        x = x + y
        out.append(x)
    return torch.stack(out, dim=1)[0]


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    wave = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.3 * t)) + 0.05 * rng.standard_normal(n)
    return np.round(wave.astype(np.float32) * 32768).clip(-32768, 32767).astype(np.int16)


def test_key_map_covers_openai_names():
    assert openai_to_hf_encoder_key("encoder.positional_embedding") == "embed_positions.weight"
    assert openai_to_hf_encoder_key("encoder.blocks.3.attn.key.weight") == "layers.3.self_attn.k_proj.weight"
    assert openai_to_hf_encoder_key("encoder.blocks.0.mlp.2.bias") == "layers.0.fc2.bias"
    assert openai_to_hf_encoder_key("encoder.ln_post.weight") == "layer_norm.weight"
    assert openai_to_hf_encoder_key("decoder.token_embedding.weight") is None


def test_openai_and_hf_formats_identical(random_whisper):
    root = random_whisper["root"]
    enc_openai = load_audio_encoder(root / "openai" / "tiny.pt")
    enc_cg = load_audio_encoder(root / "hf_cg")  # model.safetensors, "model.encoder." prefix
    enc_base = load_audio_encoder(root / "hf_base")  # pytorch_model.bin, "encoder." prefix
    assert (root / "hf_sharded" / "model.safetensors.index.json").is_file()
    enc_sharded = load_audio_encoder(root / "hf_sharded")
    for enc in (enc_openai, enc_cg, enc_base, enc_sharded):
        assert enc.n_layer == LAYERS and enc.d_model == D_MODEL
        assert not any("decoder" in k for k in enc.state_dict())
    mel = log_mel(_noise(2.0).astype(np.float32) / 32768)
    a, b, c, d = (e.embeddings(mel) for e in (enc_openai, enc_cg, enc_base, enc_sharded))
    assert a.shape == (100, LAYERS + 1, D_MODEL)
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_matches_independent_openai_math_and_skips_ln_post(random_whisper):
    enc = load_audio_encoder(random_whisper["root"] / "openai" / "tiny.pt")
    mel = log_mel(_noise(1.0).astype(np.float32) / 32768)
    segment, n_valid = next(mel_segments(mel))
    ref = _reference_states(random_whisper["state"], random_whisper["dims"], segment)
    with torch.inference_mode():
        got = enc(segment[None])[0]
    assert float((got.double() - ref).abs().max()) < 1e-4
    # the HF last_hidden_state is ln_post(last state): ours must be the raw state, not that
    with torch.inference_mode():
        hf_last = enc.encoder(input_features=segment[None]).last_hidden_state[0]
    assert float((hf_last - got[-1]).abs().max()) > 1e-2
    feats = enc.embeddings(mel)
    assert torch.equal(feats, got[:, : n_valid // 2].transpose(0, 1))


@pytest.mark.slow
def test_long_clip_is_segmented_like_official(random_whisper):
    """65 s: windows at mel 0, 3000, 6000; 1500 + 1500 + 250 positions; each window encoded on its own
    (no context across 30 s boundaries) and the tail window zero-padded in the log-mel domain."""
    enc = load_audio_encoder(random_whisper["root"] / "openai" / "tiny.pt")
    samples = _noise(65.0, seed=3)
    feats = encode_audio(enc, samples, fps=25, sample_rate=16000)
    mel = log_mel(samples.astype(np.float32) / 32768)
    assert mel.shape[1] == 6500
    assert feats.features.shape[0] == feature_positions(samples.size) == 1500 + 1500 + 250
    starts, keeps = [0, 3000, 6000], [1500, 1500, 250]
    pieces = []
    for start, keep in zip(starts, keeps):
        window = mel[:, start : start + 3000]
        window = torch.cat([window, torch.zeros(80, 3000 - window.shape[1])], dim=1)
        pieces.append(_reference_states(random_whisper["state"], random_whisper["dims"], window)[:, :keep])
    ref = torch.cat(pieces, dim=1).transpose(0, 1)
    assert float((feats.features.double() - ref).abs().max()) < 1e-4
    assert feats.num_chunks == chunk_count(3250, 25) and feats.num_frames == 65 * 25
    assert torch.equal(feats.chunks, frame_chunks(feats.features, 25))
    batched = enc.embeddings(mel, batch_size=2)  # [0, 3000] together, then the tail alone
    assert float((batched - feats.features).abs().max()) < 1e-5


def test_fp16_checkpoint_and_dtypes(random_whisper):
    root = random_whisper["root"] / "openai"
    mel = log_mel(_noise(1.0).astype(np.float32) / 32768)
    f32 = load_audio_encoder(root / "tiny_fp16.pt").embeddings(mel)
    f64 = load_audio_encoder(root / "tiny_fp16.pt", dtype=torch.float64).embeddings(mel, out_dtype=torch.float64)
    assert f64.dtype == torch.float64 and f32.dtype == torch.float32
    assert float((f32.double() - f64).abs().max()) < 1e-4
    bf16 = load_audio_encoder(root / "tiny_fp16.pt", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    rel = (bf16.embeddings(mel) - f32).abs().max() / f32.abs().max()
    assert math.isfinite(float(rel)) and float(rel) < 0.1


def test_missing_and_bad_checkpoints(tmp_path):
    with pytest.raises(ModelFilesNotFoundError, match="audio_processor/tiny.pt"):
        load_audio_encoder(tmp_path / "pretrained_weights" / "audio_processor" / "tiny.pt")
    with pytest.raises(ModelFilesNotFoundError, match="tiny.pt"):
        load_audio_encoder(tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ModelFilesNotFoundError, match="model.safetensors"):
        load_audio_encoder(tmp_path / "hf")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint"):
        load_audio_encoder(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pt.*truncated or corrupt"):
        load_audio_encoder(tmp_path / "garbage.pt")


def test_incomplete_checkpoint_is_a_checkpoint_error(random_whisper, tmp_path):
    ckpt = torch.load(random_whisper["root"] / "openai" / "tiny.pt", weights_only=True)
    del ckpt["model_state_dict"]["encoder.blocks.1.mlp.0.weight"]
    torch.save(ckpt, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_audio_encoder(tmp_path / "tiny.pt")
    ckpt = torch.load(random_whisper["root"] / "openai" / "tiny.pt", weights_only=True)
    ckpt["dims"]["n_audio_layer"] = 3
    torch.save(ckpt, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_audio_encoder(tmp_path / "tiny.pt")
