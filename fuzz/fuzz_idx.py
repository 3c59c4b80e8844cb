"""Coverage-guided fuzzing of the IDX reader with atheris.

The property: whatever the bytes, ``mnistlab.data.idx.parse_idx`` returns a well-formed uint8
array or raises ``DataError``. Any other exception, a crash, a hang or a memory blow-up is a bug.

Setup (not in any extra; atheris 3.0.0 ships wheels for CPython 3.11)::

    pip install atheris==3.0.0

Run for a bounded time (libFuzzer flags pass straight through; the corpus folder is optional)::

    python fuzz/fuzz_idx.py -max_total_time=60 -rss_limit_mb=2048 fuzz/corpus

The first input byte picks the mode: labels or images, raw or gzipped, and for gzip whether to
cut the compressed stream short. Seeds (valid files) are written to ``fuzz/corpus`` when the
folder is given and empty, so the fuzzer starts from real headers.
"""

from __future__ import annotations

import gzip
import io
import os
import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    from mnistlab.data import idx
    from mnistlab.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = idx.LABELS_MAGIC if array.ndim == 1 else idx.IMAGES_MAGIC
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def _seed(corpus: str):
    if not os.path.isdir(corpus) or os.listdir(corpus):
        return
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([1, 7], dtype=np.uint8)
    seeds = {"images-raw": b"\x00" + _idx_bytes(images), "labels-raw": b"\x01" + _idx_bytes(labels),
             "images-gz": b"\x02" + _idx_bytes(images), "labels-gz": b"\x03" + _idx_bytes(labels)}
    for name, data in seeds.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)


def test_one_input(data: bytes):
    if not data:
        return
    mode, body = data[0], data[1:]
    kind = "labels" if mode & 1 else "images"
    if mode & 2:
        blob = gzip.compress(body, mtime=0)
        if mode & 4:  # cut the compressed stream short
            blob = blob[: max(0, len(blob) - 1 - (mode >> 3))]
    else:
        blob = body
    try:
        out = idx.parse_idx(io.BytesIO(blob), kind, name="fuzz")
    except DataError:
        return
    if out.dtype != np.uint8 or out.ndim != (1 if kind == "labels" else 3) or len(out) == 0:
        raise AssertionError(f"malformed result {out.dtype} {out.shape}")


def main():
    for arg in sys.argv[1:]:
        if not arg.startswith("-"):
            _seed(arg)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
