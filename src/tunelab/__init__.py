"""tunelab: from raw examples to a fine-tuned language model you own.

The Python API is the product; the CLI, server and UI are thin layers over it.
"""

from tunelab.cores import set_wait_policy

# Before anything imports torch: its OpenMP pool must not busy-wait (see tunelab/cores.py).
set_wait_policy()

from tunelab.errors import TunelabError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["TunelabError", "__version__"]
