"""Decode a person's image file safely into one grayscale array.

Only raster formats on an allow-list are ever opened (``Image.open(..., formats=FORMATS)``), so
EPS (which would run Ghostscript), SVG, PDF and friends are refused before any decoder runs. The
file size is checked before reading and the pixel count before decoding; truncated files are
errors, never silently half-decoded images.

Every mode Pillow produces is turned into float32 luminance 0-255:

- ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``...: Pillow's own conversion to ``L``.
- 16-bit (``I;16``, ``I;16B``, ...) is scaled by 255/65535, not clipped.
- ``I`` (32-bit int) and ``F`` (float) are scaled by their range: values already in 0..255
  stay, 0..65535 is scaled like 16-bit, ``F`` in 0..1 is multiplied by 255, anything else is
  stretched min..max onto 0..255.
- Alpha (``LA``, ``RGBA``, ``PA``, ``P`` with a transparent colour, ...) is composited onto a
  background chosen to look like paper behind the visible pixels: when most of the image is
  transparent (strokes drawn on a transparent canvas) the background contrasts with the
  strokes - white behind dark strokes, black behind light ones; when most of the image is
  opaque (a photo with transparent corners) the background is the median colour of the
  opaque part, so the transparent bits look like more of the same paper. Either way the hidden
  RGB values of fully transparent pixels (often black) never leak into the result.
- Photos are turned upright from their EXIF orientation tag.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from mnistlab.errors import ImageError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000

# ``warnings.catch_warnings`` swaps process-wide state; the lock keeps two decoding threads from
# restoring each other's filters. Only the header parse runs under it.
_OPEN_LOCK = threading.Lock()
_FIX = (
    "Save the image as PNG, JPEG, BMP, GIF, WEBP or TIFF "
    f"(at most {MAX_BYTES // (1024 * 1024)} MB and {MAX_PIXELS // 1_000_000} megapixels)"
)


def load_image(
    source, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, draft: int | None = None
) -> np.ndarray:
    """Decode an image into grayscale luminance.

    Args:
        source: a path (``str`` or ``os.PathLike``), the file's bytes (``bytes``, ``bytearray``,
            ``memoryview``), a binary file object, or an already opened ``PIL.Image.Image``.
        max_bytes: refuse files larger than this, checked before reading them whole.
        max_pixels: refuse images with more pixels than this, checked before decoding.
        draft: JPEG only - let the decoder shrink the picture by up to 8x (DCT scaling, much
            faster for phone photos) as long as both sides stay at least ``draft`` pixels.

    Returns:
        float32 array ``(H, W)`` with values 0-255 (dark = 0), alpha composited as described in
        the module docstring.

    Raises:
        ImageError: the source is missing, too large, truncated, corrupt, or not an allowed
            raster format. The message names the file and says how to fix it.
    """
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        _check_pixels(source.size, name, max_pixels)
        _load_pixels(source, name)
        return to_gray(_upright(source), name)
    data, name = _read_bytes(source, max_bytes)
    im = _open(data, name, max_pixels)
    if draft and im.format == "JPEG" and min(im.size) > draft:
        im.draft("L", (draft, draft))
    _load_pixels(im, name)
    return to_gray(_upright(im), name)


def _upright(im: Image.Image) -> Image.Image:
    """Rotate a photo as its EXIF orientation tag says (phones store pictures sideways)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        return im


def _read_bytes(source, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = "<bytes>"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ImageError(f"{name} is not a file. Pass the path of an image file")
            if size > max_bytes:
                raise _too_big(name, size, max_bytes)
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            raise ImageError(f"cannot read image {name}: {e.strerror or e}. Check the path") from e
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "") or "<file object>")
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as e:
            raise ImageError(f"cannot read image {name}: {e}") from e
        if not isinstance(data, bytes | bytearray):
            raise ImageError(
                f"{name} was opened in text mode. Open image files with mode 'rb'; "
                f"received {type(data).__name__} from read()"
            )
        data = bytes(data)
    else:
        raise ImageError(
            "cannot read an image from this object. Pass a path, bytes, a binary file object or "
            f"a PIL image; received {type(source).__name__}"
        )
    if len(data) > max_bytes:
        raise _too_big(name, len(data), max_bytes)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes). {_FIX}")
    return data, name


def _too_big(name: str, size: int, max_bytes: int) -> ImageError:
    return ImageError(
        f"{name} is too large: {size:,} bytes, the limit is {max_bytes:,}. "
        "Crop or shrink the picture, or save it as JPEG"
    )


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} has too many pixels to decode safely ({e}). {_FIX}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(
            f"{name} is not an image mnistlab can read (unknown or disallowed format; EPS, SVG "
            f"and PDF are never opened). {_FIX}; received {_sniff(data)}"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoder failure on user input is an ImageError
        raise ImageError(f"{name} is corrupt and cannot be decoded: {e}. {_FIX}") from e
    _check_pixels(im.size, name, max_pixels)
    return im


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name} has no pixels (size {w}x{h}). {_FIX}")
    if w * h > max_pixels:
        raise ImageError(
            f"{name} is {w}x{h} = {w * h:,} pixels, the limit is {max_pixels:,}. "
            "Shrink or crop the picture around the digit"
        )


def _load_pixels(im: Image.Image, name: str) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to padding truncated files with grey; refuse rather than guess.
        raise ImageError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so truncated files "
            "cannot be detected. Set it back to False"
        )
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
        raise ImageError(
            f"{name} is truncated or corrupt: {e}. Re-save or re-export the image"
        ) from e


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip()
    for prefix, what in (
        (b"%!PS", "PostScript/EPS"),
        (b"\xc5\xd0\xd3\xc6", "EPS"),
        (b"%PDF", "PDF"),
        (b"<svg", "SVG"),
        (b"<?xml", "XML/SVG"),
    ):
        if head.startswith(prefix):
            return f"a {what} file"
    # Say what kind of file it is, never its content: the first bytes of a private file do not
    # belong in an error message (or a server's response).
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"a text file of {len(data):,} bytes"
    return f"{len(data):,} bytes of an unknown format"


def to_gray(im: Image.Image, name: str = "<PIL image>") -> np.ndarray:
    """Convert a loaded Pillow image of any mode to float32 luminance 0-255.

    Args:
        im: a decoded image (first frame of an animation).
        name: used in error messages.

    Returns:
        float32 array ``(H, W)``, values 0-255.

    Raises:
        ImageError: the mode cannot be converted, or float pixels are NaN or infinite.
    """
    mode = im.mode
    if mode == "P" and ("transparency" in im.info or im.palette and im.palette.mode == "RGBA"):
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("PA", "La", "RGBa"):
        im = im.convert("RGBA" if mode != "La" else "LA")
        mode = im.mode
    if mode in ("LA", "RGBA"):
        return _composite(im)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32) * np.float32(255.0 / 65535.0)
    if mode in ("I", "F"):
        return _scale_range(np.asarray(im), mode, name)
    try:
        return np.asarray(im.convert("L"), dtype=np.float32)
    except ValueError:
        pass  # no direct conversion (e.g. LAB, HSV): go through RGB
    try:
        return np.asarray(im.convert("RGB").convert("L"), dtype=np.float32)
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"{name}: cannot convert image mode {mode!r} to grayscale: {e}") from e


def _scale_range(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageError(f"{name} contains NaN or infinite pixel values; received mode {mode!r}")
    lo, hi = float(a.min()), float(a.max())
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        a = a * (255.0 / 65535.0)
    elif hi > lo:
        a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = np.zeros_like(a)
    return a.astype(np.float32)


def _composite(im: Image.Image) -> np.ndarray:
    """Composite an ``LA`` or ``RGBA`` image onto a paper-like background (see module doc)."""
    alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    gray = np.asarray(im.convert("L"), dtype=np.float32)
    visible = alpha > 0.5
    if not visible.any():
        return np.full(gray.shape, 255.0, dtype=np.float32)
    if visible.mean() > 0.5:
        background = float(np.median(gray[visible]))
    else:
        weight = alpha.sum()
        strokes = float((alpha * gray).sum() / weight)
        background = 255.0 if strokes < 128.0 else 0.0
    return (alpha * gray + (1.0 - alpha) * np.float32(background)).astype(np.float32)
