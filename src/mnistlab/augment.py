"""On-the-fly, seeded image augmentation: small shifts, rotations, zoom, horizontal flips and
random erasing.

Every epoch draws one random transform per training image from ``(seed, epoch)`` alone, so a run
that is interrupted and resumed sees exactly the images an uninterrupted one sees, and two runs
with the same seed see the same ones. The transform maps each output pixel back into the source
image (rotation about the centre, zoom, shift, then an optional mirror) and reads it with bilinear
interpolation; outside the source is black (0), like the data's own background. Random erasing
(Zhong et al., 2017) then blanks one rectangle of the result to black.

Only the training set is augmented; validation, test and prediction see the images as they are.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from mnistlab.config import AugmentConfig


def draw(cfg: AugmentConfig, n: int, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """The random transform of each of ``n`` images in ``epoch``: float32 ``angle`` (radians),
    ``scale``, ``dx``/``dy`` (fractions of the width/height), bool ``flip`` and float32 ``erase``
    ``(n, 4)``: the blanked rectangle's top, left, height and width as fractions of the image
    (height 0: nothing blanked)."""
    rng = np.random.default_rng([seed, epoch, 2])
    u = rng.uniform(-1.0, 1.0, size=(4, n)).astype(np.float32)  # always the same draws
    flip = rng.random(n) < 0.5
    return {
        "angle": np.float32(np.deg2rad(cfg.rotation)) * u[0],
        "scale": np.float32(1.0) + np.float32(cfg.zoom) * u[1],
        "dx": np.float32(cfg.shift) * u[2],
        "dy": np.float32(cfg.shift) * u[3],
        "flip": flip & cfg.flip,
        "erase": _draw_erase(cfg.erase, n, seed, epoch),
    }


def _draw_erase(share: float, n: int, seed: int, epoch: int) -> np.ndarray:
    """Random erasing's rectangles: 2-25 % of the area, aspect ratio 0.3-3.3, anywhere inside
    the image, in ``share`` of the images (their own stream, so the other draws stay as they
    were before erasing existed)."""
    boxes = np.zeros((n, 4), np.float32)
    if not share:
        return boxes
    rng = np.random.default_rng([seed, epoch, 3])
    area = rng.uniform(0.02, 0.25, n)
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3), n))
    height = np.minimum(np.sqrt(area * aspect), 1.0)
    width = np.minimum(np.sqrt(area / aspect), 1.0)
    top, left = rng.random(n) * (1 - height), rng.random(n) * (1 - width)
    chosen = rng.random(n) < share
    boxes[chosen] = np.stack([top, left, height, width], axis=1)[chosen]
    return boxes


def transform(images: np.ndarray, t: dict[str, np.ndarray]) -> np.ndarray:
    """Apply per-image transforms ``t`` (as from ``draw``) to ``(N, H, W)`` images: uint8 pixels
    0-255 (scaled as ``mnistlab.model.to_input`` does) or float32 in [0, 1].

    Returns:
        float32 ``(N, H, W)`` in [0, 1], a new array.
    """
    if images.dtype == np.uint8:
        scale = np.float32(1.0 / 255.0)
    else:
        images, scale = images.astype(np.float32, copy=False), np.float32(1.0)
    images = np.ascontiguousarray(images)
    out = np.empty(images.shape, np.float32)
    cos = (np.cos(t["angle"]) / t["scale"]).astype(np.float32)
    sin = (np.sin(t["angle"]) / t["scale"]).astype(np.float32)
    per_image = (images, cos, sin, t["dx"].astype(np.float32), t["dy"].astype(np.float32),
                 t["flip"].astype(np.bool_))
    boxes = _pixel_boxes(t["erase"], *images.shape[1:])
    warp, half = _warp(), len(images) // 2
    if half < SPLIT_AT or _cores() < 2:
        warp(*per_image, scale, boxes, out)
        return out
    # An epoch's images (the other core idle meanwhile): half on a second thread (the compiled
    # warp releases the GIL); each image's pixels are its own, so the same bits.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(warp, *(a[half:] for a in per_image), scale, boxes[half:], out[half:])
        warp(*(a[:half] for a in per_image), scale, boxes[:half], out[:half])
        rest.result()
    return out


SPLIT_AT = 1024  # images in each half before the warp uses a second thread


@functools.cache
def _cores() -> int:
    from mnistlab.engine.blas import available_cores

    return available_cores()


def _pixel_boxes(erase: np.ndarray, h: int, w: int) -> np.ndarray:
    """``erase``'s fractions as int64 pixel rows/columns ``(n, 4)``: top, bottom, left, right
    (end exclusive; at least one pixel each way where a rectangle was drawn)."""
    top, left = np.floor(erase[:, 0] * h), np.floor(erase[:, 1] * w)
    drawn = erase[:, 2] > 0
    rows = np.where(drawn, np.maximum(np.rint(erase[:, 2] * h), 1), 0)
    cols = np.where(drawn, np.maximum(np.rint(erase[:, 3] * w), 1), 0)
    return np.stack([top, top + rows, left, left + cols], axis=1).astype(np.int64)


@functools.cache
def _warp():
    """The bilinear inverse warp, compiled by numba on first use and cached on disk in the
    engines' cache folder (where ``engine.warm`` compiles it ahead), whichever runs first."""
    import numba

    if not os.environ.get("NUMBA_CACHE_DIR"):  # as the engines set it up on import
        from mnistlab.engine.blas import Threads
        from mnistlab.engine.kernels import cache_dir

        numba.config.CACHE_DIR = str(cache_dir(Threads().sgemm_int64))
    return numba.njit(cache=True, nogil=True)(_warp_python)


def _warp_python(images, cos, sin, dx, dy, flip, scale, boxes, out):
    n, h, w = images.shape
    cy, cx = np.float32((h - 1) / 2), np.float32((w - 1) / 2)
    one = np.float32(1)
    for i in range(n):
        for r in range(h):
            v = np.float32(r) - cy - dy[i] * np.float32(h)
            for c in range(w):
                if boxes[i, 0] <= r < boxes[i, 1] and boxes[i, 2] <= c < boxes[i, 3]:
                    out[i, r, c] = 0
                    continue
                u = np.float32(c) - cx - dx[i] * np.float32(w)
                sx = cos[i] * u + sin[i] * v + cx
                sy = cos[i] * v - sin[i] * u + cy
                if flip[i]:
                    sx = np.float32(w - 1) - sx
                x0, y0 = np.floor(sx), np.floor(sy)
                fx, fy = sx - x0, sy - y0
                ix, iy = int(x0), int(y0)
                acc = np.float32(0)
                if 0 <= iy < h and 0 <= ix < w:
                    acc += np.float32(images[i, iy, ix]) * scale * (one - fx) * (one - fy)
                if 0 <= iy < h and 0 <= ix + 1 < w:
                    acc += np.float32(images[i, iy, ix + 1]) * scale * fx * (one - fy)
                if 0 <= iy + 1 < h and 0 <= ix < w:
                    acc += np.float32(images[i, iy + 1, ix]) * scale * (one - fx) * fy
                if 0 <= iy + 1 < h and 0 <= ix + 1 < w:
                    acc += np.float32(images[i, iy + 1, ix + 1]) * scale * fx * fy
                out[i, r, c] = acc


def augment_epoch(images: np.ndarray, cfg: AugmentConfig, seed: int, epoch: int) -> np.ndarray:
    """The training images of ``epoch`` (uint8 0-255 or float32 in [0, 1], ``(N, H, W)``,
    already in the epoch's order), each with its own random transform drawn from
    ``(seed, epoch)``, as float32 in [0, 1]."""
    return transform(images, draw(cfg, len(images), seed, epoch))


def preview(images: np.ndarray, cfg: AugmentConfig, seed: int, epochs: int, columns: int = 6):
    """How augmentation shows ``images`` (uint8 ``(K, H, W)``) in up to ``columns`` epochs
    spread over the run, each image with its own draw: ``(uint8 (K, E, H, W), epochs 1-based)``.
    (In training, an image's draw depends on its place in the epoch's order; the preview shows
    the same kind of transforms, not the exact ones a given image got.)"""
    chosen = sorted({round(i * (epochs - 1) / max(columns - 1, 1)) for i in range(columns)})
    out = np.stack([augment_epoch(images, cfg, seed, e) for e in chosen], axis=1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), [e + 1 for e in chosen]
