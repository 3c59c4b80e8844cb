"""Figures of the tutorial and of the report, as pure functions of arrays.

Every function returns a ``matplotlib.figure.Figure`` drawn on an Agg canvas (never ``pyplot``, so
nothing global changes and nothing opens a window); ``png_bytes`` turns one into PNG bytes. Text
that comes from a run (class names) is drawn with ``parse_math=False`` so a ``$`` in a name is
just a character.
"""

from mnistlab.plots.base import new_figure, png_bytes
from mnistlab.plots.images import (
    augmented_figure,
    mistakes_figure,
    prediction_figure,
    samples_figure,
    weight_mosaic,
    weights_figure,
)
from mnistlab.plots.results import (
    compare_curves_figure,
    confidence_figure,
    confusion_figure,
    curves_figure,
)

__all__ = [
    "augmented_figure",
    "compare_curves_figure",
    "confidence_figure",
    "confusion_figure",
    "curves_figure",
    "mistakes_figure",
    "new_figure",
    "png_bytes",
    "prediction_figure",
    "samples_figure",
    "weight_mosaic",
    "weights_figure",
]
