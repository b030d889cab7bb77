"""model-diffing: what did fine-tuning change inside a language model?

The data flows one way: models -> tokens -> activations -> methods -> report.
See docs/architecture.md for the module that owns each stage.
"""

from __future__ import annotations

__version__ = "0.1.0"

from diffing.errors import DiffingError

__all__ = ["DiffingError", "__version__"]
