"""Image folders: one sub-folder per class, optionally under ``train/`` and ``test/``.

Each file is opened with Pillow restricted to a format allow-list and a pixel cap, converted to
grayscale and resized to one common size. Images are used as they are: MNIST digits are white ink
on black, so a folder of black-on-white scans trains a model for black-on-white scans.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from mnistlab.errors import DataError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
MAX_PIXELS = 4096 * 4096


def class_key(name: str):
    """Sort class folders naturally: ``2`` before ``10``, numbers before words."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def is_image_folder(root: str | os.PathLike) -> bool:
    """Return True if ``root`` has sub-folders (classes, or ``train``/``test``)."""
    return any(p.is_dir() and not p.name.startswith(".") for p in Path(root).iterdir())


def read_folder(
    root: str | os.PathLike, size: tuple[int, int] = (28, 28), max_pixels: int = MAX_PIXELS
) -> dict:
    """Read an image folder into arrays.

    Args:
        root: a folder of class sub-folders, or one with ``train/`` (and ``test/``) holding them.
        size: ``(height, width)`` every image is resized to.
        max_pixels: largest width x height accepted for one image.

    Returns:
        ``{"x_train": uint8 (N, H, W), "y_train": int64 (N,), "x_test": uint8 (M, H, W) or None,
        "y_test": int64 (M,) or None, "class_names": tuple[str, ...]}``; the test part is None
        when the folder has no ``test/``.

    Raises:
        DataError: no classes, an empty class, a file that is not an allowed image, a folder
            where an image was expected, or a test class that train does not have.
    """
    root = Path(root)
    train_root, test_root = root, None
    if (root / "train").is_dir():
        train_root = root / "train"
        test_root = root / "test" if (root / "test").is_dir() else None
    classes = sorted(_class_dirs(train_root), key=class_key)
    if not classes:
        raise DataError(
            f"{train_root}: no class sub-folders. Put each class's images in its own sub-folder, "
            "e.g. digits/0/a.png, digits/1/b.png"
        )
    x_train, y_train = _read_split(train_root, classes, size, max_pixels, require_all=True)
    x_test = y_test = None
    if test_root is not None:
        unknown = sorted(set(_class_dirs(test_root)) - set(classes))
        if unknown:
            raise DataError(
                f"{test_root}: class folder(s) {', '.join(unknown)} are not in {train_root}. "
                f"Use the same class names; train has {', '.join(classes)}"
            )
        x_test, y_test = _read_split(test_root, classes, size, max_pixels, require_all=False)
        if len(y_test) == 0:
            raise DataError(f"{test_root}: no images. Add images or remove the empty test folder")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "class_names": tuple(classes)}


def _class_dirs(root: Path) -> list[str]:
    names = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise DataError(
                f"{entry}: a file directly in {root}. Images go inside one sub-folder per class "
                f"(e.g. {root}/0/{entry.name})"
            )
        names.append(entry.name)
    return names


def _read_split(root: Path, classes: list[str], size, max_pixels: int, require_all: bool):
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
        if not files and require_all:
            raise DataError(f"{folder}: class {name!r} has no images. Add images or remove it")
        for path in files:
            images.append(decode(path, size, max_pixels))
            labels.append(label)
    h, w = size
    x = np.stack(images) if images else np.zeros((0, h, w), np.uint8)
    return x, np.asarray(labels, dtype=np.int64)


def decode(path: Path, size: tuple[int, int] = (28, 28), max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image file to a grayscale uint8 ``(H, W)`` array of ``size``.

    Raises:
        DataError: the file is a folder, not an allowed image format, too large, or corrupt.
    """
    from PIL import Image

    if path.is_dir():
        raise DataError(f"{path}: a folder inside a class folder. Class folders hold only images")
    allowed = ", ".join(FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:
                if im.width * im.height > max_pixels:
                    raise DataError(
                        f"{path}: {im.width}x{im.height} pixels is over the {max_pixels}-pixel "
                        "limit. Shrink the image"
                    )
                gray = im.convert("L")
                h, w = size
                if gray.size != (w, h):
                    gray = gray.resize((w, h), Image.Resampling.BILINEAR)
                return np.asarray(gray, dtype=np.uint8)
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(
            f"{path}: not an image in an allowed format ({allowed}). Remove the file or convert it"
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: too many pixels (decompression-bomb guard). Shrink it") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(
            f"{path}: the image is corrupt or truncated ({type(e).__name__}: {e}). "
            "Re-export or remove it"
        ) from None
