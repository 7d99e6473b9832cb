"""``python -m echomimic_core.lora merge|info`` (see :mod:`echomimic_core.lora.merge`)."""

import sys

from .merge import main

if __name__ == "__main__":
    sys.exit(main())
