"""JSON pixels -> arrays, and the one description of which shapes are accepted.

``accepted_shapes(size)`` is the sentence README's Serving section and ``/docs`` show (the app
puts it into its OpenAPI schema), and ``to_array`` is the check behind it: the model's own
shape is used as it is, any other grid of rows is a picture to preprocess, and a flat list must
be the model's size. ``schemas.PixelsRequest`` enforces the per-number rules (0-255 or 0-1,
finite, numbers only) and the ``MAX_SIDE`` cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mnistlab.errors import ImageError

if TYPE_CHECKING:
    from mnistlab.serving.schemas import PixelsRequest

MAX_SIDE = 512  # longest side of a JSON picture; 512 x 512 numbers are ~1.5 MB of JSON


def accepted_shapes(size: int | None = None) -> str:
    """Which ``pixels`` shapes the API accepts, for a model seeing ``size`` x ``size`` images.

    Args:
        size: the model's image side S; ``None`` for the model-independent wording.

    Returns:
        One sentence (Markdown) naming the shapes, used as they are or preprocessed.
    """
    if size is None:
        own = "S×S rows or S·S flat numbers (S = `image_size` at `/api/model`)"
    else:
        own = f"{size}×{size} rows or {size * size} flat numbers"
    return (f"`pixels` is {own}, used as they are (white digit on black, like MNIST), or any "
            f"other H×W grid of rows, 1 to {MAX_SIDE} per side, which is a picture and is "
            "preprocessed (polarity, crop, centring); numbers 0–255, or 0–1 when none exceeds 1; "
            "strings, booleans, NaN and infinity are refused.")


def to_array(item: PixelsRequest, size: int) -> tuple[np.ndarray, bool | None]:
    """One request's pixels as an array, and the predictor's ``preprocess`` argument for it.

    Args:
        item: a validated request (numbers in range, at most ``MAX_SIDE`` per side).
        size: the model's image side S.

    Returns:
        ``(pixels, preprocess)``: float32 ``(H, W)`` or ``(S*S,)``; ``preprocess`` is ``None``
        for the model's own shape used as it is, ``True`` for a picture to preprocess (any other
        grid, or the model's shape when ``item.preprocess`` asks for it).

    Raises:
        ImageError: rows of different lengths, or a flat list that is not S*S numbers.
    """
    px = item.pixels
    if isinstance(px[0], list):
        widths = {len(row) for row in px}
        if len(widths) > 1:
            raise ImageError(f"pixels rows must all have the same length; received rows of "
                             f"lengths {sorted(widths)}. {accepted_shapes(size)}")
        shaped = len(px) == size and widths == {size}
    elif len(px) != size * size:
        raise ImageError(
            f"a flat pixels list must have {size * size} numbers ({size}x{size}); received "
            f"{len(px)}. Send rows ([[...], ...]) for pictures of other sizes. "
            f"{accepted_shapes(size)}")
    else:
        shaped = True
    return np.array(px, dtype=np.float32), None if shaped and not item.preprocess else True
