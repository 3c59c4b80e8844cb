"""The JSON API: ``/api/model``, ``/api/predict`` and ``/api/predict/batch``.

The routes read the served model from ``request.app.state`` (``predictor``, ``info``,
``limits``). Inference is the numpy ``Predictor``: thread-safe, no lock, so requests never wait
for each other. Model-shaped JSON pixels (the cheap, common case: ~0.1 ms) are predicted on the
event loop; anything that decodes or preprocesses a picture runs in the thread pool so a slow
photo cannot stall other clients.
"""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mnistlab.serving.bodies import body_kind, read_files, read_json
from mnistlab.serving.openapi import ERRORS, body_doc
from mnistlab.serving.pixels import to_array
from mnistlab.serving.routing import answer_head
from mnistlab.serving.schemas import (
    BatchRequest,
    BatchResponse,
    ModelInfo,
    PixelsRequest,
    PredictionResponse,
)

router = APIRouter(prefix="/api")

ReturnImage = Annotated[bool, Query(
    description="Include the image the model saw (also settable per JSON item)")]


@router.get("/model", response_model=ModelInfo, tags=["model"], summary="The served model")
async def model_info(request: Request):
    """The served model: run, dataset, test metrics, class names, layers."""
    return request.app.state.info


@router.post("/predict", response_model=PredictionResponse, tags=["predict"],
             summary="Predict one picture", responses=ERRORS,
             openapi_extra=body_doc("PixelsRequest", "file", many=False))
async def predict(request: Request, return_image: ReturnImage = False):
    """Predict one picture: an image file (form field ``file``) or JSON ``pixels``."""
    predictor = request.app.state.predictor
    if body_kind(request) == "json":
        item = await read_json(request, PixelsRequest)
        return _json((await _predict_json(predictor, [item], return_image))[0])
    blobs = await read_files(request, "file", limit=1)
    return _json((await run_in_threadpool(_predict_files, predictor, blobs, return_image))[0])


@router.post("/predict/batch", response_model=BatchResponse, tags=["predict"],
             summary="Predict several pictures", responses=ERRORS,
             openapi_extra=body_doc("BatchRequest", "files", many=True))
async def predict_batch(request: Request, return_image: ReturnImage = False):
    """Predict several pictures: image files (form field ``files``) or JSON ``items``.

    At most ``max_batch`` pictures (see /api/model); answers come in the same order.
    """
    predictor = request.app.state.predictor
    max_batch = request.app.state.limits.max_batch
    if body_kind(request) == "json":
        batch = await read_json(request, BatchRequest)
        if len(batch.items) > max_batch:
            raise HTTPException(422, f"too many pictures: at most {max_batch} per batch; "
                                     f"received {len(batch.items)}. Split the batch")
        answers = await _predict_json(predictor, batch.items, return_image)
        return _json(BatchResponse(predictions=answers))
    blobs = await read_files(request, "files", limit=max_batch)
    answers = await run_in_threadpool(_predict_files, predictor, blobs, return_image)
    return _json(BatchResponse(predictions=answers))


answer_head(router)


# Pictures -> predictions -------------------------------------------------------------------------


async def _predict_json(predictor, items: list[PixelsRequest], return_image: bool):
    prepared = [to_array(item, predictor.image_size) for item in items]
    flags = [item.return_image or return_image for item in items]
    if all(pre is None for _, pre in prepared):
        # ~0.1 ms of numpy: cheaper on the event loop than a hop to the thread pool
        # (bench/serve_load.py: 0.43-0.46 vs 0.53-0.83 ms of server CPU per request).
        return _predict_arrays(predictor, prepared, flags)
    return await run_in_threadpool(_predict_arrays, predictor, prepared, flags)


def _predict_arrays(predictor, prepared, return_images) -> list[PredictionResponse]:
    if all(pre is None for _, pre in prepared):
        results = predictor.predict_many([a for a, _ in prepared])  # one forward pass
    else:
        results = [predictor.predict(a, preprocess=pre) for a, pre in prepared]
    return [_answer(r, k) for r, k in zip(results, return_images, strict=True)]


def _predict_files(predictor, blobs: list[tuple[str, bytes]], return_image: bool):
    out = []
    for name, data in blobs:
        # A named file object, so that decoding errors name the upload.
        stream = io.BytesIO(data)
        stream.name = name
        out.append(_answer(predictor.predict(stream), return_image))
    return out


def _answer(prediction, return_image: bool) -> PredictionResponse:
    image = None
    if return_image:
        image = np.round(prediction.image * 255.0).astype(np.uint8).tolist()
    return PredictionResponse(
        label=prediction.label, class_name=prediction.name,
        confidence=round(prediction.confidence, 6),
        probabilities=[round(p, 6) for p in prediction.probabilities.tolist()],
        status=prediction.status, message=prediction.message, image=image,
    )


def _json(model) -> Response:
    # The models were validated when built; FastAPI's second validation pass would cost ~10 %
    # of a prediction's time. response_model= on the route still documents them.
    return Response(model.model_dump_json(), media_type="application/json")
