"""The full-size whisper-tiny encoder our audio path builds matches the ``whisper_tiny.pt`` entry of
``full_size_manifest.json``: every encoder key of the official checkpoint maps onto a parameter or buffer
of transformers' WhisperEncoder with the same shape, and nothing of the encoder is left unmapped. The
decoder keys are listed in the manifest but are never loaded (EchoMimicV2 never runs the decoder)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from echomimic_core.audio import openai_to_hf_encoder_key, whisper_config_from_dims


@pytest.fixture(scope="module")
def whisper_entry(fixtures):
    path = fixtures / "full_size_manifest.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())["whisper_tiny.pt"]


def test_whisper_tiny_encoder_matches_manifest(whisper_entry):
    with torch.device("meta"):
        encoder = WhisperEncoder(whisper_config_from_dims(whisper_entry["dims"]))
    ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}

    mapped, decoder_keys = {}, []
    for entry in whisper_entry["keys"]:
        hf_key = openai_to_hf_encoder_key(entry["key"])
        if hf_key is None:
            decoder_keys.append(entry["key"])
            continue
        assert not hf_key.startswith("unmapped:"), entry["key"]
        mapped[hf_key] = tuple(entry["shape"])

    assert decoder_keys and all(k.startswith("decoder.") for k in decoder_keys)
    assert set(mapped) == set(ours), (sorted(set(mapped) ^ set(ours)))[:10]
    wrong = {k: (mapped[k], ours[k]) for k in mapped if mapped[k] != ours[k]}
    assert not wrong, wrong
    assert len(mapped) + len(decoder_keys) == whisper_entry["num_keys"]
    # encoder parameters (the positional table is a buffer in the openai checkpoint)
    n_dims = whisper_entry["dims"]
    assert ours["embed_positions.weight"] == (n_dims["n_audio_ctx"], n_dims["n_audio_state"])
    assert sum(1 for k in ours if k.endswith("self_attn.q_proj.weight")) == n_dims["n_audio_layer"]
