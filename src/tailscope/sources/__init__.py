"""What users have -> a lazy stream of named layers. Knows files and frameworks, not spectra."""

from .base import LayerRef, Reader, Source, SourceError, natural_key
from .layers import LayerPlan, plan_layer
from .opener import open_source
from .registry import READERS

__all__ = ["READERS", "LayerPlan", "LayerRef", "Reader", "Source", "SourceError", "natural_key",
           "open_source", "plan_layer"]
