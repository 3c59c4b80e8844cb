"""Predict a person's image files: expand folders, keep going past bad files, show what was seen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistlab.errors import ImageError
from mnistlab.files import load_npz

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def expand_inputs(inputs) -> list[Path]:
    """Turn files and folders into a sorted list of files (folders: image files inside, recursively).

    A path that does not exist is kept, so that it is reported as an error in its place.

    Raises:
        ImageError: a folder holds no image file at all (nothing would be predicted).
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(
                    f"folder {p} holds no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                    "in sub-folders too). Pass a folder with images, or the image files themselves"
                )
            files += found
        else:
            files.append(p)
    return files


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


def save_side_by_side(path: Path, prediction, out: Path, height: int = 224) -> None:
    """Write the original picture next to the (upscaled) image the model saw, as PNG."""
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
    canvas = Image.new("L", (original.width + 16 + height, height), 128)
    canvas.paste(original, (0, 0))
    canvas.paste(seen, (original.width + 16, 0))
    save_with(out, lambda p: canvas.save(p, format="PNG"), suffix=".png")


def pick_test_images(run, indices) -> list[tuple[int, int, np.ndarray]]:
    """Test images of a run by index, from its predictions.npz: ``(index, true label, image)``.

    Raises:
        ImageError: an index outside the test set.
    """
    data = load_npz(run.file("predictions.npz"))
    n = len(data["labels"])
    out = []
    for i in indices:
        if not 0 <= i < n:
            raise ImageError(f"--index {i} is outside the test set (0..{n - 1}); pick an index in range")
        out.append((i, int(data["labels"][i]), data["images"][i]))
    return out
