"""What the server serves: one model, loaded once, as a ``Predictor`` and its ``ModelInfo``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnistlab.serving.schemas import LayerInfo, ModelInfo

if TYPE_CHECKING:
    from mnistlab.inference import Predictor


@dataclass(frozen=True)
class Served:
    """The served model.

    Attributes:
        predictor: the ``mnistlab.inference.Predictor`` answering requests.
        info: what ``/api/model`` shows (the server limits still 0 until the app fills them in).
    """

    predictor: Predictor
    info: ModelInfo


def load_served(source, model_file: bool = False) -> Served:
    """Load what the server serves, reading the model file exactly once.

    Args:
        source: a run directory, a ``Predictor``, or (with ``model_file``) a ``.keras``/``.h5``
            file saved by any Keras code.
        model_file: ``source`` is a model file, not a run directory.

    Returns:
        The ``Served`` predictor and metadata; a bare ``Predictor`` has no layer list.

    Raises:
        RunError: a missing or incomplete run directory. ModelError: a refused model.
    """
    from mnistlab.inference import Predictor

    if isinstance(source, Predictor):
        return Served(source, _info(source, source="predictor"))
    path = Path(os.fspath(source))
    if model_file:
        from mnistlab.modelfile import load_model_file

        model = load_model_file(path)
        predictor = Predictor.from_model(model)
        return Served(predictor, _info(predictor, source=f"model file {path.name}", model=model))
    return _load_run(path)


def _load_run(path: Path) -> Served:
    from mnistlab.inference import Predictor
    from mnistlab.runs import load_run

    run = load_run(path)  # refuses a missing or incomplete run before anything is loaded
    model = run.load_model()
    predictor = Predictor.from_run(run, model)  # the run and model as loaded here, not again
    manifest, metrics = run.manifest, run.metrics
    dataset = manifest.get("dataset") or {}
    return Served(predictor, _info(
        predictor,
        source="run directory",
        model=model,
        run_name=run.path.name,
        dataset=dataset.get("name"),
        preset=manifest.get("preset"),
        epochs=manifest.get("epochs_done"),
        test_accuracy=metrics.get("test_accuracy", manifest.get("test_accuracy")),
        test_loss=metrics.get("test_loss", manifest.get("test_loss")),
    ))


def _info(predictor, source: str, model=None, **fields) -> ModelInfo:
    layers = [_layer_info(layer) for layer in model.layers] if model is not None else []
    return ModelInfo(
        run_name=fields.pop("run_name", None),
        source=source,
        dataset=fields.pop("dataset", None),
        class_names=list(predictor.class_names),
        num_classes=predictor.num_classes,
        image_size=predictor.image_size,
        params=int(model.count_params()) if model is not None else None,
        layers=layers,
        preprocess=predictor.preprocess_params.model_dump(),
        max_batch=0,
        max_body_bytes=0,
        **fields,
    )


def _layer_info(layer) -> LayerInfo:
    try:
        shape = [None if d is None else int(d) for d in layer.output.shape]
    except (AttributeError, ValueError):
        shape = []
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return LayerInfo(name=layer.name, type=type(layer).__name__, output_shape=shape,
                     params=int(layer.count_params()), activation=activation)
