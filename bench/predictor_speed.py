"""How fast is Predictor? Single-image latency and batch throughput, vs model.predict.

    python bench/predictor_speed.py [--repeats 30] [--threads N] [--model mlp|cnn]

Uses the tutorial MLP (784-100-64-32-10) as mnistlab builds it, or with ``--model cnn`` the
keras-io convnet of the ``cnn`` preset (the Predictor runs it in the conv engine when its kernels
are compiled; the Keras path it used before, on the backend of ``KERAS_BACKEND``, is timed beside),
untrained: speed does not depend on the weights. Prints best and median of ``--repeats`` runs (the best is the machine's capability,
the median what a busy machine gives) and writes bench/results/predictor_speed.json (``-cnn`` for the convnet).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import mnistlab  # noqa: F401 - sets the Keras backend before keras is imported


def _times(fn, repeats: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="limit BLAS threads")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)

    import numpy as np
    from threadpoolctl import threadpool_info

    from mnistlab.backend import import_keras
    from mnistlab.config import load_config
    from mnistlab.inference import Predictor
    from mnistlab.model import build_model

    # As mnistlab runs it: Keras imported without TensorFlow's, matplotlib's and pandas' imports
    # (keras.utils.set_random_seed would import TensorFlow, whose threads then share the cores).
    import_keras()
    preset = "cnn" if args.model == "cnn" else "tutorial"
    model = build_model(load_config(preset).model, (28, 28), 10, seed=0)
    predictor = Predictor.from_model(model)
    rng = np.random.default_rng(0)
    batch_u8 = rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8)
    batch_f32 = batch_u8.astype(np.float32) / 255.0
    one = batch_u8[0]

    # numpy first: XLA's worker threads keep spinning for a while after a Keras call and would
    # steal the cores from BLAS (2-core machine), so Keras is timed last.
    time.sleep(2.0)
    rows = {}
    rows["single image, predict_proba (ms)"] = _times(
        lambda: predictor.predict_proba(one), args.repeats * 20
    )
    rows["single image, predict -> Prediction (ms)"] = _times(
        lambda: predictor.predict(one), args.repeats * 20
    )
    rows["10,000 uint8 images (ms)"] = _times(
        lambda: predictor.predict_proba(batch_u8), args.repeats
    )
    rows["10,000 float32 images (ms)"] = _times(
        lambda: predictor.predict_proba(batch_f32), args.repeats
    )
    if args.model == "cnn":  # what the Predictor did before it ran convnets in the conv engine
        from mnistlab.conv_predict import KerasNetwork

        keras_net = KerasNetwork(model, model.input_shape, 28)
        flat_u8 = batch_u8.reshape(len(batch_u8), -1)
        rows["single image, through KerasNetwork (ms)"] = _times(
            lambda: keras_net.predict(flat_u8[:1], True), args.repeats * 20
        )
        rows["10,000 uint8 images, through KerasNetwork (ms)"] = _times(
            lambda: keras_net.predict(flat_u8, True), args.repeats
        )
    rows["single image, keras model.predict (ms)"] = _times(
        lambda: model.predict(batch_f32[:1], verbose=0), args.repeats
    )
    rows["single image, keras model(x) (ms)"] = _times(
        lambda: model(batch_f32[:1], training=False), args.repeats
    )
    rows["10,000 images, keras model.predict (ms)"] = _times(
        lambda: model.predict(batch_f32, batch_size=10_000, verbose=0), args.repeats
    )

    result = {"rows": {}, "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "blas": [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads")}
                       for i in threadpool_info()]}  # fmt: skip
    print(f"Predictor's network: {type(predictor.network).__name__}")
    print(f"{'':48s} {'best':>10s} {'median':>10s}")
    for name, ts in rows.items():
        best, median = min(ts) * 1e3, float(np.median(ts)) * 1e3
        result["rows"][name] = {"best_ms": best, "median_ms": median}
        print(f"{name:48s} {best:10.4f} {median:10.4f}")
    for name in [k for k in result["rows"] if k.startswith("10,000") and "model" not in k]:
        r = result["rows"][name]
        r["images_per_s_best"] = 10_000 / (r["best_ms"] / 1e3)
        print(f"{name[:-5]}: {r['images_per_s_best']:,.0f} images/s (best)")
    name = "predictor_speed.json" if args.model == "mlp" else "predictor_speed-cnn.json"
    out = Path(__file__).parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
