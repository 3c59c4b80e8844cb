"""Request and response bodies of the HTTP API; /openapi.json is generated from these.

Pixels travel as JSON numbers: 0-255, or 0-1 when every value is at most 1 (the same rule as
``Predictor.predict_proba``). NaN and infinity are refused even though Python's JSON parser
would accept them; request bodies are strict, so strings and booleans are refused instead of
being read as numbers (``true`` is not 1). Which shapes are accepted: ``serving.pixels``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from mnistlab.serving.pixels import MAX_SIDE, accepted_shapes

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False, strict=True)]
Row = Annotated[list[Pixel], Field(min_length=1, max_length=MAX_SIDE)]


def _pixels_form(value) -> str:
    # Choose the branch from the data, so an error names the problem in the form that was sent
    # instead of listing why both forms failed.
    return "rows" if isinstance(value, list) and value and isinstance(value[0], list) else "flat"


Pixels = Annotated[
    Annotated[list[Row], Field(min_length=1, max_length=MAX_SIDE), Tag("rows")]
    | Annotated[list[Pixel], Field(min_length=1, max_length=MAX_SIDE * MAX_SIDE), Tag("flat")],
    Discriminator(_pixels_form),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PixelsRequest(_Body):
    """One picture as numbers."""

    pixels: Pixels = Field(
        # The app replaces this with the served model's own sizes in /openapi.json.
        description=accepted_shapes(),
        examples=[[[0] * 28 for _ in range(28)]],
    )
    preprocess: bool = Field(
        False,
        description="Also preprocess an S x S grid (e.g. a black-on-white drawing at 28x28).",
    )
    return_image: bool = Field(False, description="Include the S x S image the model saw.")


class BatchRequest(_Body):
    """Several pictures as numbers."""

    items: list[PixelsRequest] = Field(min_length=1, description="at most max_batch items")


class PredictionResponse(BaseModel):
    """What the model says about one picture."""

    label: int | None = Field(description="predicted class index; null unless status is ok")
    class_name: str | None = Field(description="predicted class name; null unless status is ok")
    confidence: float = Field(ge=0, le=1, description="probability of label; 0 unless ok")
    probabilities: list[float] = Field(
        description="softmax output, one per class (for inspection only unless status is ok)"
    )
    status: Literal["ok", "blank", "no_digit"] = Field(
        description="ok; blank: no ink; no_digit: not a plausible single digit"
    )
    message: str = Field(description="why status is not ok; empty when ok")
    image: list[list[int]] | None = Field(
        None, description="the S x S image the model saw, 0-255, white on black (on request)"
    )


class BatchResponse(BaseModel):
    """One prediction per item, in input order."""

    predictions: list[PredictionResponse]


class LayerInfo(BaseModel):
    """One layer of the served model."""

    name: str
    type: str
    output_shape: list[int | None]
    params: int
    activation: str | None = None


class ModelInfo(BaseModel):
    """The served model and where it came from."""

    run_name: str | None = Field(description="run directory name; null for a plain model file")
    source: str = Field(description="what was loaded: a run directory or a model file")
    dataset: str | None
    preset: str | None = None
    epochs: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    class_names: list[str]
    num_classes: int
    image_size: int = Field(description="S: the model sees S x S images")
    params: int | None = Field(description="trainable and non-trainable parameters")
    layers: list[LayerInfo]
    preprocess: dict = Field(description="the preprocessing parameters pictures go through")
    max_batch: int = Field(description="most items accepted by /api/predict/batch")
    max_body_bytes: int = Field(description="largest request body accepted")


class Health(BaseModel):
    """Liveness or readiness."""

    status: Literal["alive", "ready", "loading"]


class Problem(BaseModel):
    """Every 4xx/5xx answer: what was wrong and how to fix it."""

    detail: str
    errors: list[dict] | None = Field(None, description="per-field problems, when there are any")
