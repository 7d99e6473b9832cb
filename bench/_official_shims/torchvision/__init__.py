"""Stand-in for torchvision: only ``utils.make_grid`` of a batch of one (see ../README.md)."""

from . import utils  # noqa: F401
