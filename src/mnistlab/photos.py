"""Predict a person's image files: expand folders, keep going past bad files, show what was seen.

``plan_prediction`` turns what a user asked for (a run directory or a model file; test images by
index or image files) into one ``PredictionPlan``: the predictor, the test images and the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistlab.errors import ConfigError, ImageError
from mnistlab.files import load_npz
from mnistlab.runs import MODEL_FILE, as_run

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CAPTION_HEIGHT = 36  # pixels of the strip under a --show image that holds its caption


@dataclass
class FileResult:
    """The outcome for one input file: a prediction, or the error that stopped it."""

    path: Path
    prediction: object | None = None  # mnistlab.inference.Prediction
    error: str | None = None

    def as_dict(self) -> dict:
        p = self.prediction
        if p is None:
            return {"file": str(self.path), "status": "error", "error": self.error}
        return {
            "file": str(self.path), "status": p.status, "label": p.label, "name": p.name,
            "confidence": round(float(p.confidence), 6),
            "top": [{"label": lbl, "name": n, "probability": round(float(q), 6)}
                    for lbl, n, q in p.top_k],
            "message": p.message,
        }


@dataclass
class PredictionPlan:
    """What to predict with and on.

    Attributes:
        predictor: a ``mnistlab.inference.Predictor``.
        tests: ``(index, true label, image)`` per test image asked for by index; images are the
            run's stored test images, already model-shaped (uint8 ``(H, W)``).
        files: image files and folders to predict (see ``predict_files``).
    """

    predictor: object
    tests: list[tuple[int, int, np.ndarray]]
    files: list[str]


def plan_prediction(args, *, indices=(), model_path=None) -> PredictionPlan:
    """Choose the prediction source and the inputs, loading the run (or model file) once.

    Args:
        args: the positional inputs: a run (a ``Run`` or its directory) followed by image files
            and folders; with ``model_path``, image files and folders only.
        indices: test image indices of the run (needs a run directory).
        model_path: a ``.keras``/``.h5`` file to predict with instead of a run's model.

    Returns:
        A ``PredictionPlan``.

    Raises:
        ConfigError: ``indices`` with ``model_path``, or nothing to predict.
        RunError, ModelError: the run or model file cannot be used. ImageError: an index is
            outside the test set, or an input path does not exist (both checked before a model
            is loaded).
    """
    from mnistlab.inference import Predictor

    args = list(args)
    files = [str(a) for a in (args if model_path else args[1:])]
    if indices and model_path:
        raise ConfigError(
            "--index needs a run directory (its test images), not --model; received --model "
            f"{model_path} with --index {', '.join(map(str, indices))}"
        )
    if not indices and not files:
        raise ConfigError("nothing to predict: give --index N or one or more IMAGE files/folders")
    check_inputs(files)  # arguments first: nothing is loaded for a mistyped path
    if model_path:
        from mnistlab.modelfile import load_model_file

        return PredictionPlan(Predictor.from_model(load_model_file(model_path)), [], files)
    run = as_run(args[0])
    run.check_files(MODEL_FILE)
    tests = pick_test_images(run, indices) if indices else []
    return PredictionPlan(Predictor.from_run(run), tests, files)


def check_inputs(inputs) -> None:
    """Raise ``ImageError`` naming every input path that does not exist (checked before a model
    is loaded). Unreadable files are not checked here: ``predict_files`` reports them in place."""
    from mnistlab.errors import shorten

    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        raise ImageError(
            f"no such file or folder: {', '.join(shorten(m) for m in missing)}. Check the "
            f"path{'s' if len(missing) > 1 else ''}; nothing was predicted"
        )


def find_images(inputs) -> tuple[list[Path], list[Path]]:
    """Turn files and folders into the files to predict and the files skipped as not images.

    Folders are searched recursively for files with an image suffix (``IMAGE_SUFFIXES``); their
    other files are skipped. A file named directly is always kept, and so is a path that does not
    exist, so that either is reported as an error in its place.

    Returns:
        ``(files, skipped)``: sorted per folder, in input order.

    Raises:
        ImageError: a folder holds no image file at all (nothing would be predicted).
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            files.append(p)
            continue
        inside = sorted(f for f in p.rglob("*") if f.is_file())
        found = [f for f in inside if f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise ImageError(
                f"folder {p} holds no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                "in sub-folders too). Pass a folder with images, or the image files themselves"
            )
        files += found
        skipped += [f for f in inside if f.suffix.lower() not in IMAGE_SUFFIXES]
    return files, skipped


def expand_inputs(inputs) -> list[Path]:
    """The files to predict of ``find_images(inputs)``, without the skipped ones."""
    return find_images(inputs)[0]


def skipped_text(skipped, shown: int = 5) -> str | None:
    """One line about the files of folders that were not predicted; None if there were none."""
    if not skipped:
        return None
    names = ", ".join(Path(p).name for p in skipped[:shown])
    more = f", ... ({len(skipped) - shown} more)" if len(skipped) > shown else ""
    what = "files that are not images" if len(skipped) != 1 else "file that is not an image"
    return f"Skipped {len(skipped)} {what}: {names}{more}"


def trained_on(run) -> str | None:
    """The name of the dataset a run (a ``Run`` or its directory) was trained on, if recorded."""
    dataset = as_run(run, require_complete=False).manifest.get("dataset")
    return dataset.get("name") if isinstance(dataset, dict) else None


# What a named dataset's classes are, for the note to someone who expects digits.
_CLASS_KINDS = {"fashion_mnist": "clothing"}
_DIGITS = [str(i) for i in range(10)]


def classes_note(class_names, dataset: str | None = None) -> str | None:
    """A note for someone passing photos to a model whose classes are not the ten digits.

    Args:
        class_names: the model's class names, index = label.
        dataset: the dataset the model was trained on, if known (a run records it).

    Returns:
        The note, or None for a digit model.
    """
    names = [str(c) for c in class_names]
    if names == _DIGITS:
        return None
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    kind = _CLASS_KINDS.get(dataset, f"{len(names)} classes")
    where = f"trained on {dataset}" if dataset else "not trained on digits"
    return (f"Note: this model was {where} ({kind}: {shown}): a digit photo will be classified "
            "as one of these.")


def predict_files(predictor, inputs, show_dir: str | Path | None = None, top_k: int = 3):
    """Predict every image file in ``inputs``; an unreadable file is recorded, not fatal.

    Args:
        predictor: a ``mnistlab.inference.Predictor``.
        inputs: file and folder paths.
        show_dir: if given, write ``<name>.seen.png`` per input: the original next to the
            image the model saw.
        top_k: how many classes to list per file.

    Returns:
        list of ``FileResult`` in input order.
    """
    results = []
    if show_dir is not None:
        _make_folder(Path(show_dir))
    for path in expand_inputs(inputs):
        try:
            pred = predictor.predict(path, top_k=top_k)
        except ImageError as e:
            results.append(FileResult(path, error=str(e)))
            continue
        results.append(FileResult(path, prediction=pred))
        if show_dir is not None:
            save_side_by_side(path, pred, Path(show_dir) / f"{path.stem}.seen.png")
    return results


def _make_folder(folder: Path) -> None:
    from mnistlab.errors import OutputPathError, shorten

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "it is an existing file" if folder.is_file() else (e.strerror or type(e).__name__)
        raise OutputPathError(f"cannot use --show {shorten(str(folder))}: {why}. Pass a folder you "
                              "can write to (it is created if missing)") from None


def caption(prediction) -> str:
    """The line written under a ``--show`` image: the label and confidence, or why there is none."""
    if prediction.status == "ok":
        return f"predicted {prediction.name} (confidence {prediction.confidence:.2f})"
    return f"{prediction.status}: {prediction.message}"


def save_side_by_side(path: Path, prediction, out: Path, height: int = 224) -> None:
    """Write the original picture next to the (upscaled) image the model saw, as PNG.

    A white strip under both holds ``caption(prediction)``.
    """
    from PIL import Image

    from mnistlab.files import save_with
    from mnistlab.images import load_image

    gray = load_image(path)
    h, w = gray.shape
    original = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).resize(
        (max(1, round(w * height / h)), height), Image.Resampling.BILINEAR
    )
    seen = Image.fromarray((np.clip(prediction.image, 0, 1) * 255).astype(np.uint8)).resize(
        (height, height), Image.Resampling.NEAREST
    )
    canvas = Image.new("L", (original.width + 16 + height, height + CAPTION_HEIGHT), 128)
    canvas.paste(original, (0, 0))
    canvas.paste(seen, (original.width + 16, 0))
    _draw_caption(canvas, caption(prediction), top=height)
    save_with(out, lambda p: canvas.save(p, format="PNG"), suffix=".png")


def _draw_caption(canvas, text: str, top: int) -> None:
    """Black text on a white strip from ``top`` down, shortened with "…" to fit the width."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, top, canvas.width, canvas.height), fill=255)
    font = ImageFont.load_default(size=20)
    room = canvas.width - 16
    while len(text) > 1 and draw.textlength(text, font=font) > room:
        text = text[:-2] + "…"
    draw.text((8, top + (CAPTION_HEIGHT - 20) // 2), text, fill=0, font=font)


def pick_test_images(run, indices) -> list[tuple[int, int, np.ndarray]]:
    """Test images of a run by index, from its predictions.npz: ``(index, true label, image)``.

    Raises:
        ImageError: an index outside the test set.
    """
    data = load_npz(run.file("predictions.npz"), keys=("labels", "images"))
    n = len(data["labels"])
    out = []
    for i in indices:
        if not 0 <= i < n:
            raise ImageError(f"--index {i} is outside the test set (0..{n - 1}); pick an index in range")
        out.append((i, int(data["labels"][i]), data["images"][i]))
    return out
