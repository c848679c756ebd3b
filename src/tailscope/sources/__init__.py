"""What users have -> a lazy stream of named layers. Knows files and frameworks, not spectra."""

from .base import LayerRef, Source, SourceError, natural_key, open_source
from .layers import LayerPlan, plan_layer

__all__ = ["LayerPlan", "LayerRef", "Source", "SourceError", "natural_key", "open_source",
           "plan_layer"]
