"""tunelab: from raw examples to a fine-tuned language model you own.

The Python API is the product; the CLI, server and UI are thin layers over it.
"""

from tunelab.errors import TunelabError

__version__ = "0.1.0"
__all__ = ["TunelabError", "__version__"]
