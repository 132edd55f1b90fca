"""fngen: formulas in, verified ``torch.autograd.Function`` modules out."""

__version__ = "0.1.0"

from fngen.api import build, check, generate, load, load_spec  # noqa: E402
from fngen.errors import Location, OutputError, SpecError  # noqa: E402

__all__ = [
    "build",
    "check",
    "generate",
    "load",
    "load_spec",
    "Location",
    "OutputError",
    "SpecError",
    "__version__",
]
