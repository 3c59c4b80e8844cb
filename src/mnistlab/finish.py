"""A trained run's last step: test metrics, model files, the predictor file, the run marked complete.

The test probabilities come from the forward pass that computed the validation figures: for a run
the compiled loop trained, ``engine.forward.loop_probabilities`` on its arrays (the same bits with
Keras loaded or not, compiled or on the numpy replica; ``mnistlab evaluate`` uses it too); for
any other run, Keras' ``predict``. A head-start run whose model has a template of its Keras files
(``mnistlab.keras_files``) finishes without importing Keras: its files are the template filled
with its arrays, byte for byte what Keras would write. A run that saves through Keras keeps such
a template for the next run of the same model.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from mnistlab import keras_files
from mnistlab.data import Dataset
from mnistlab.files import save_npz, save_with, sha256_file, write_bytes, write_json, write_text
from mnistlab.headstart import HeadStart
from mnistlab.health import check_learning
from mnistlab.runs import PREDICTOR_FILE, Run, utc_now

MODEL_FILES = ("model.keras", "model.h5")


def finish_run(run: Run, model, ds: Dataset, rows: list[dict], y_val, config, started: float,
               template_key: str | None = None) -> None:
    """Evaluate on the test set, save the model files and mark the run complete.

    Args:
        model: the trained Keras model, or a ``HeadStart`` whose ``keras_free()`` holds.
        template_key: keep a template of the Keras files under this key if none is kept yet.
    """
    from mnistlab.evaluation import evaluate_layers, evaluate_model
    from mnistlab.inference import save_checked

    layers = _loop_layers(run, model)
    with ThreadPoolExecutor(1) as pool:  # zlib releases the GIL: compress while predicting
        probs_ready, predicted_ready = Future(), Future()  # the test images go first, meanwhile
        saving = pool.submit(save_npz, run.file("predictions.npz"), images=ds.x_test,
                             labels=ds.y_test, probabilities=probs_ready, predicted=predicted_ready)
        try:
            if layers is not None:
                metrics, report_text, probs = evaluate_layers(layers, ds.x_test, ds.y_test,
                                                              ds.class_names)
            else:
                metrics, report_text, probs = evaluate_model(model, ds.x_test, ds.y_test,
                                                             ds.class_names)
            probs_ready.set_result(probs)
            predicted_ready.set_result(probs.argmax(axis=1).astype(np.int64))
        finally:  # after an error the writer stops (no file) and the error goes up
            for ready in (probs_ready, predicted_ready):
                if not ready.done():
                    ready.set_exception(RuntimeError("the evaluation did not finish"))
        metrics["learning"] = check_learning(rows, y_val, ds.num_classes,
                                             config.train.learning_rate)
        write_json(run.file("metrics.json"), metrics)
        write_text(run.file("classification_report.txt"), report_text)
        if isinstance(model, HeadStart):
            files = _fill_template(run, model)
            built = _predictor(model, run, ds)
        else:
            files = save_model_files(run, model, template_key if layers is not None else None)
            built = None
        predictor = save_checked(model, run.file(PREDICTOR_FILE), ds.x_test, probs,
                                 preprocess_params=run.preprocess_params,
                                 class_names=ds.class_names, built=built)
        saving.result()  # its error (a full disk) is raised here, before the run is complete
    if predictor["file"]:
        files[PREDICTOR_FILE] = predictor.pop("sha256")
    elapsed = time.time() - started + float(run.manifest.get("duration_s") or 0.0)
    run.update(status="complete", finished=utc_now(), duration_s=round(elapsed, 3), files=files,
               test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"],
               learning=metrics["learning"], predictor=predictor,
               model_files="template" if isinstance(model, HeadStart) else "keras")


def _loop_layers(run: Run, model) -> list[tuple] | None:
    """The trained Dense layers ``(kernel, bias, activation)`` if the compiled loop trained the
    run (its forward pass then gives the test probabilities), else None."""
    if (run.manifest.get("engine") or {}).get("path") != "compiled":
        return None
    if isinstance(model, HeadStart):
        return model.layers()
    from mnistlab.engine.plan import dense_layers

    return dense_layers(model)


def _predictor(head: HeadStart, run: Run, ds: Dataset):
    """The numpy predictor of a head start's trained arrays (``Predictor.from_model`` without
    the model: the same file)."""
    from mnistlab.engine.forward import Network
    from mnistlab.inference import Predictor

    network = Network(head.plan(), int(np.prod(ds.image_shape)))
    return Predictor._assemble(network, run.preprocess_params, ds.class_names)


def _fill_template(run: Run, head: HeadStart) -> dict:
    """Write the run's model files from its template and arrays; return their sha256s."""
    weights, opt = head.checkpoint_values()
    arrays = [*weights, *opt]
    template = head.template
    write_bytes(run.file("model.keras"), template.keras_zip(arrays))
    write_bytes(run.file("model.h5"), template.fill("model.h5", arrays))
    _write_architecture(run, template.files["architecture.json"].decode(),
                        template.files["summary.txt"].decode())
    return {name: sha256_file(run.file(name)) for name in MODEL_FILES}


def save_model_files(run: Run, model, template_key: str | None = None) -> dict:
    """Write model.keras, model.h5, architecture.json/.yaml and summary.txt with Keras; return
    sha256s. With ``template_key``, keep a template of the files unless one is kept already."""
    from mnistlab.model import summary_text

    save_with(run.file("model.keras"), lambda p: model.save(p), suffix=".keras")
    save_with(run.file("model.h5"), lambda p: keras_files.save_h5(model, p), suffix=".h5",
              stage_in_memory=True)
    arch, summary = model.to_json(), summary_text(model)
    _write_architecture(run, arch, summary)
    if template_key is not None and keras_files.Template.load(template_key) is None:
        try:
            keras_files.make(template_key, model, run.file("model.keras"), run.file("model.h5"),
                             arch, summary)
        except (OSError, ValueError, KeyError) as e:  # a cache only: the run is complete anyway
            logging.getLogger(__name__).info("mnistlab: no template of the Keras files (%s)", e)
    return {name: sha256_file(run.file(name)) for name in MODEL_FILES}


def _write_architecture(run: Run, arch_json: str, summary: str) -> None:
    import yaml

    write_text(run.file("architecture.json"), json.dumps(json.loads(arch_json), indent=2) + "\n")
    write_text(run.file("architecture.yaml"), yaml.safe_dump(json.loads(arch_json),
                                                             sort_keys=False))
    write_text(run.file("summary.txt"), summary + "\n")
