"""Audio-path benchmark (run by hand): how many seconds of audio per second the CPU encodes.

    .venv/bin/python bench/audio.py [--seconds 60] [--threads N] [--dtype float32|bfloat16] [--fps 24]

Uses the FULL-SIZE whisper-tiny architecture (dims of the official tiny.pt: 4 layers, 384 wide, 51865-token
decoder) with random weights written in the official openai format, so no download is needed; a synthetic
speech-like clip is written as a 16-bit wav and goes through the whole path (decode -> log-mel -> encoder
-> per-frame chunks). Prints a table; peak memory is the process's peak RSS (ru_maxrss) after each stage.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from echomimic_core.checkpoints import save_checkpoint  # noqa: E402  (after the path set-up)

from echomimic_core.audio import encode_audio, load_audio_encoder, load_waveform, log_mel  # noqa: E402
from echomimic_core.audio.windows import frame_chunks  # noqa: E402

TINY_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                 n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_random_tiny(path: Path, seed: int = 0) -> None:
    """openai-format checkpoint with whisper-tiny shapes (fp16, like the release), random values."""
    g = torch.Generator().manual_seed(seed)
    d, n_layer, ctx = TINY_DIMS["n_audio_state"], TINY_DIMS["n_audio_layer"], TINY_DIMS["n_audio_ctx"]

    def w(*shape, scale=None):
        scale = scale if scale is not None else shape[-1] ** -0.5
        return (torch.randn(*shape, generator=g) * scale).half()

    sd = {
        "encoder.conv1.weight": w(d, 80, 3, scale=(80 * 3) ** -0.5), "encoder.conv1.bias": w(d, scale=0.05),
        "encoder.conv2.weight": w(d, d, 3, scale=(d * 3) ** -0.5), "encoder.conv2.bias": w(d, scale=0.05),
        "encoder.positional_embedding": w(ctx, d, scale=1.0),
        "encoder.ln_post.weight": torch.ones(d).half(), "encoder.ln_post.bias": torch.zeros(d).half(),
    }
    for i in range(n_layer):
        p = f"encoder.blocks.{i}."
        for name in ("query", "key", "value", "out"):
            sd[p + f"attn.{name}.weight"] = w(d, d)
            if name != "key":
                sd[p + f"attn.{name}.bias"] = w(d, scale=0.05)
        for ln in ("attn_ln", "mlp_ln"):
            sd[p + f"{ln}.weight"] = torch.ones(d).half()
            sd[p + f"{ln}.bias"] = torch.zeros(d).half()
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = w(4 * d, d), w(4 * d, scale=0.05)
        sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"] = w(d, 4 * d), w(d, scale=0.05)
    # decoder: only the big tensors matter for the load cost; the encoder loader ignores decoder keys
    sd["decoder.token_embedding.weight"] = w(TINY_DIMS["n_vocab"], d)
    sd["decoder.positional_embedding"] = w(TINY_DIMS["n_text_ctx"], d)
    save_checkpoint({"dims": TINY_DIMS, "model_state_dict": sd}, path)


def write_clip(path: Path, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    x = env * (0.2 * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 1200 * t)) + 0.02 * rng.standard_normal(n)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(pcm.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--fps", type=float, default=24)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, clip = Path(tmp) / "tiny.pt", Path(tmp) / "clip.wav"
        write_random_tiny(ckpt)
        write_clip(clip, args.seconds)
        base = peak_rss_mb()

        t0 = time.perf_counter()
        import transformers.models.whisper.modeling_whisper  # noqa: F401
        rows.append(("import transformers (once per process)", time.perf_counter() - t0, peak_rss_mb()))

        t0 = time.perf_counter()
        encoder = load_audio_encoder(ckpt, dtype=dtype)
        rows.append(("load encoder (tiny.pt, fp16 -> %s)" % args.dtype, time.perf_counter() - t0, peak_rss_mb()))

        t0 = time.perf_counter()
        wav = load_waveform(clip)
        rows.append(("decode wav (PyAV s16 mono 16k)", time.perf_counter() - t0, peak_rss_mb()))

        t0 = time.perf_counter()
        mel = log_mel(wav)
        rows.append(("log-mel", time.perf_counter() - t0, peak_rss_mb()))

        encoder.embeddings(log_mel(wav[:16000]))  # warm-up (one 30 s window)
        t0 = time.perf_counter()
        feats = encoder.embeddings(mel)
        rows.append(("encoder (%d windows of 30 s)" % -(-mel.shape[1] // 3000), time.perf_counter() - t0, peak_rss_mb()))

        t0 = time.perf_counter()
        chunks = frame_chunks(feats, args.fps)
        rows.append(("per-frame chunks", time.perf_counter() - t0, peak_rss_mb()))

        t0 = time.perf_counter()
        result = encode_audio(encoder, clip, fps=args.fps)
        total = time.perf_counter() - t0
        rows.append(("encode_audio() end to end", total, peak_rss_mb()))
        assert torch.equal(result.chunks, chunks)

    print(f"audio: {args.seconds:g} s synthetic clip, whisper-tiny full size (random weights), "
          f"{args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"features {tuple(feats.shape)}, chunks {tuple(chunks.shape)}; peak RSS before loading {base:.0f} MB")
    print(f"| {'stage':<40} | {'seconds':>8} | {'audio s / s':>11} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 13}|{'-' * 13}|")
    for name, sec, rss in rows:
        speed = f"{args.seconds / sec:11.1f}" if sec > 0 and not name.startswith(("import", "load")) else " " * 11
        print(f"| {name:<40} | {sec:8.3f} | {speed} | {rss:11.0f} |")


if __name__ == "__main__":
    main()
