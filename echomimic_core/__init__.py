"""EchoMimicV2 as a plain library: networks, checkpoint loading, audio features, hand poses,
the sampler and video writing. It never imports ComfyUI; the pack's nodes and the trainer are
thin layers over the names exported here."""

__version__ = "0.1.0"
