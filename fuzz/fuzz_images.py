"""Coverage-guided fuzzing of image decoding + preprocessing with atheris.

Any byte string must give a ``Preprocessed`` result or an ``ImageError``; any other exception is
a finding. Seeds are small valid images of every allowed format, made here.

    pip install atheris==3.0.0
    python fuzz/fuzz_images.py -max_total_time=60 -rss_limit_mb=4096

(``-max_total_time`` bounds the run; without it atheris runs until it finds a crash.)
"""

import io
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np
    from PIL import Image

    from mnistlab.errors import ImageError
    from mnistlab.images import load_image
    from mnistlab.preprocess import preprocess_image


def _seed_corpus(folder: Path) -> None:
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    noise = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    images = [
        (Image.fromarray(255 - digit), "PNG"),
        (Image.fromarray(digit).convert("RGB"), "JPEG"),
        (Image.fromarray(noise), "GIF"),
        (Image.fromarray(noise), "BMP"),
        (Image.fromarray(noise), "TIFF"),
        (Image.fromarray(digit), "WEBP"),
        (Image.fromarray(np.dstack([digit] * 4)), "PNG"),
        (Image.fromarray(digit.astype(np.uint16) * 257), "PNG"),
        (Image.fromarray(digit).convert("1"), "PNG"),
    ]
    for i, (im, fmt) in enumerate(images):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        (folder / f"seed{i}.{fmt.lower()}").write_bytes(buf.getvalue())


def test_one_input(data: bytes) -> None:
    try:
        gray = load_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    result = preprocess_image(gray)
    if result.image.shape != (28, 28) or not np.isfinite(result.image).all():
        raise RuntimeError(f"bad output for {len(data)} bytes: {result}")


def main() -> None:
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="mnistlab-fuzz-"))
        _seed_corpus(corpus)
        args.append(str(corpus))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
