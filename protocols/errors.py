"""Bad-input error for protocols/ and bench/: the same class as models.errors.BadInput (imports point one way)."""
from models.errors import BadInput

__all__ = ["BadInput"]
