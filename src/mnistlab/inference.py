"""Predict digits with a trained model: files, photos, PIL images or arrays.

``Predictor`` reads the Keras model into a layer plan once (``mnistlab.engine.plan``), its weights
as read-only contiguous float32 arrays, and runs the forward pass in numpy (``engine.forward``;
batches from 1,024 rows of a plain Dense chain in compiled code). That is far faster than
``model.predict`` for one image (no dispatch, no tracing) and for large batches (no per-batch
overhead), and it is thread-safe: a call only reads the weights and writes buffers it
allocated itself. Construction checks the numpy forward pass against the Keras model on a
random batch and refuses the model (``ModelError``) if they disagree or if it contains a layer
this module does not know. A convnet runs in mnistlab's conv engine where it can, else through
Keras (``mnistlab.conv_predict``).

Which inputs are preprocessed:

- paths, bytes, file objects and PIL images always go through ``preprocess_image``;
- arrays already in the model's shape - ``(S, S)``, ``(S*S,)``, ``(S, S, 1)`` for one image,
  ``(N, S, S)``, ``(N, S*S)``, ``(N, S, S, 1)`` for a batch, where ``S`` is the model's image
  side (28) - are only scaled (uint8 0-255 or float 0-1, floats above 1 taken as 0-255,
  decided once for the whole array): they are assumed MNIST-like already;
- other arrays (any ``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)``) are one picture and are
  preprocessed. ``preprocess=True`` forces preprocessing of model-shaped arrays too (e.g. a
  28x28 black-on-white drawing); ``preprocess=False`` forbids it.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mnistlab.engine.forward import Network
from mnistlab.engine.plan import prediction_plan
from mnistlab.errors import ImageError, ModelError
from mnistlab.preprocess import Preprocessed, PreprocessParams, preprocess_image, scale_to_255

VERIFY_RTOL, VERIFY_ATOL = 1e-4, 1e-5  # numpy forward pass against Keras: float32 rounding only
VERIFY_IMAGES = 500  # test images a saved predictor is checked on at training time


@dataclass(frozen=True)
class Prediction:
    """What the model says about one picture.

    Attributes:
        label: the predicted class index, or ``None`` when ``status`` is not ``"ok"``.
        name: the predicted class name (e.g. ``"7"``), or ``None`` when not ``"ok"``.
        confidence: the probability of ``label`` (0.0 when not ``"ok"``).
        probabilities: float32 ``(C,)``, the model's softmax output for ``image``. Computed even
            for blank pictures, for inspection only.
        top_k: the ``k`` most likely ``(label, name, probability)``, best first; empty when not
            ``"ok"``.
        status: ``"ok"``, ``"blank"`` or ``"no_digit"`` (see ``mnistlab.preprocess``).
        message: why the status is not ``"ok"``.
        image: float32 ``(S, S)`` in [0, 1], the image the model saw.
    """

    label: int | None
    name: str | None
    confidence: float
    probabilities: np.ndarray
    top_k: tuple[tuple[int, str, float], ...]
    status: str
    message: str
    image: np.ndarray


class Predictor:
    """A trained classifier over images, running its forward pass in numpy.

    Build one with ``Predictor.from_run(run_dir)`` or ``Predictor.from_model(model)``.

    Attributes:
        class_names: one name per class, index = label.
        preprocess_params: the ``PreprocessParams`` pictures go through.
        image_size: ``S``, the model's input images are ``S x S``.
    """

    def __init__(self, network: Network, class_names, preprocess_params: PreprocessParams):
        self.network = network
        self._input_dim = network.input_dim
        self.class_names = tuple(class_names)
        self.preprocess_params = preprocess_params
        self.image_size = preprocess_params.size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # Construction -----------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model,
        preprocess_params: PreprocessParams | None = None,
        class_names=None,
        verify: bool = True,
    ) -> Predictor:
        """Extract a Keras model's weights into a numpy predictor.

        Args:
            model: a built Keras 3 ``Sequential`` or single-input, single-output functional model
                made of Flatten, Dense, Activation, Softmax, ReLU, BatchNormalization and
                Dropout-like layers, or a convnet (``mnistlab.conv_predict``), whose input is
                ``(S, S)``, ``(S, S, 1)`` or ``(S*S,)``.
            preprocess_params: defaults to ``PreprocessParams.for_size(S)``.
            class_names: defaults to ``"0"``, ``"1"``, ...
            verify: compare the numpy forward pass with the model on a random batch.

        Raises:
            ModelError: an unknown layer or activation, an input shape that is not a square
                image, or a forward pass that does not match the model.
        """
        input_shape, side = _square_input(model)
        if _is_convnet(model):  # the numpy plan reads Dense chains
            from mnistlab.conv_predict import conv_network

            network, last = conv_network(model, input_shape, side), _keras_activation(model)
        else:
            steps = prediction_plan(model, flat_input=len(input_shape) == 2)
            network, last = Network(steps, side * side), getattr(steps[-1] if steps else None,
                                                                 "activation", None)
        if last != "softmax":
            raise ModelError(
                "the model must end in a softmax (its outputs are reported as probabilities); "
                f"its last layer is {type(model.layers[-1]).__name__} {model.layers[-1].name!r}"
            )
        predictor = cls._assemble(network, preprocess_params, class_names)
        if verify:
            predictor._verify(model, input_shape)
        return predictor

    @classmethod
    def _assemble(cls, network: Network, preprocess_params, class_names) -> Predictor:
        """A predictor over ``network`` once its class names and image size fit it."""
        out_dim, side = network.output_dim, math.isqrt(network.input_dim)
        if side * side != network.input_dim:
            raise ModelError(
                f"the network takes {network.input_dim} inputs, not a square image's S*S"
            )
        if class_names is None:
            class_names = [str(i) for i in range(out_dim)]
        if len(class_names) != out_dim:
            raise ModelError(
                f"the model has {out_dim} outputs but {len(class_names)} class names were given"
            )
        params = preprocess_params or PreprocessParams.for_size(side)
        if params.size != side:
            raise ModelError(
                f"preprocessing makes {params.size}x{params.size} images but the model takes "
                f"{side}x{side}; set size={side} in the preprocess parameters"
            )
        return cls(network, class_names, params)

    @classmethod
    def from_file(cls, path, preprocess_params: PreprocessParams | None = None,
                  class_names=None) -> Predictor:
        """A predictor from a ``predictor.npz`` written by ``save`` (numpy only, no Keras; a
        convnet's runs in the conv engine, whose compiled kernels it needs).

        Args:
            path: the ``.npz`` file (read with ``allow_pickle=False``).
            preprocess_params, class_names: as ``from_model``.

        Raises:
            ModelError: the file is missing, unreadable or not a saved predictor; a convnet's
                when the conv engine's kernels are not compiled here (``EngineNotReady``).
        """
        from mnistlab.files import load_npz

        try:
            arrays = load_npz(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ModelError(f"cannot read the saved predictor {path}: {e}") from None
        if "conv_specs" in arrays:  # a convnet, for the conv engine
            from mnistlab.conv_predict import EngineNetwork

            network = EngineNetwork.from_arrays(arrays)
        else:
            network = Network.from_arrays(arrays)
        return cls._assemble(network, preprocess_params, class_names)

    def save(self, path) -> None:
        """Write the network's arrays (``Network.to_arrays``) to ``path`` as an ``.npz``,
        atomically. The class names and preprocessing are not in it: a run records them."""
        from mnistlab.files import save_npz

        save_npz(path, compress=False, **self.network.to_arrays())

    @classmethod
    def from_run(cls, run, model=None) -> Predictor:
        """The predictor of a completed run: its model, class names and preprocessing.

        Args:
            run: a ``mnistlab.runs.Run`` or its directory (opened once, not again).
            model: the run's Keras model if the caller has loaded it already (it is not read
                twice). By default the run's ``predictor.npz`` is used when its manifest lists
                one (written and checked at training against the run's test probabilities,
                Keras' or the compiled loop's; numpy only, Keras is not imported), else
                ``model.keras`` is loaded; either with its sha256 checked.

        Raises:
            RunError: the run directory is missing or incomplete.
            ModelError: the model is refused (see ``from_model``), or ``predictor.npz`` is
                missing or does not match its sha256 (refused, not skipped for model.keras).
        """
        from mnistlab.conv_predict import EngineNotReady
        from mnistlab.runs import PREDICTOR_FILE, as_run

        run = as_run(run)
        if model is None and PREDICTOR_FILE in run.manifest.get("files", {}):
            try:
                return cls._from_run_file(run)
            except EngineNotReady:  # a convnet's file, the engine not compiled here: Keras
                pass
        return cls.from_model(run.load_model() if model is None else model,
                              preprocess_params=run.preprocess_params, class_names=run.class_names)

    @classmethod
    def _from_run_file(cls, run) -> Predictor:
        """The run's ``predictor.npz`` after checking its sha256 against the manifest.

        A file that does not match is refused rather than skipped for ``model.keras``: the run
        directory was changed after training, and which of its files to trust is the user's call.
        """
        from mnistlab.files import sha256_file
        from mnistlab.runs import PREDICTOR_FILE

        path = run.file(PREDICTOR_FILE)
        expected = run.manifest["files"][PREDICTOR_FILE]
        fix = (f"predict with the Keras model instead (--model {run.file('model.keras')}), or "
               f"delete {PREDICTOR_FILE} and its entry under \"files\" in manifest.json")
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise ModelError(f"cannot read {path} ({e.strerror or e}), which the run's manifest "
                             f"lists; {fix}") from None
        if actual != expected:
            raise ModelError(
                f"{path} does not match the sha256 recorded in the run's manifest (expected "
                f"{expected[:16]}…, found {actual[:16]}…): the file was modified or damaged; {fix}"
            )
        return cls.from_file(path, run.preprocess_params, run.class_names)

    def _verify(self, model, input_shape) -> None:
        rng = np.random.default_rng(0)
        x = rng.random((8, *input_shape[1:]), dtype=np.float32)
        try:
            expected = np.asarray(model(x, training=False), dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - any failure here means we cannot vouch for it
            raise ModelError(f"the model cannot be run on a test batch: {e}") from e
        got = self.predict_proba(x.reshape(len(x), -1))
        if expected.shape != got.shape or not np.allclose(got, expected, VERIFY_RTOL, VERIFY_ATOL):
            diff = float(np.max(np.abs(got - expected))) if expected.shape == got.shape else "n/a"
            raise ModelError(
                "the numpy forward pass does not match the Keras model (is it a plain chain of "
                f"layers?); max abs difference {diff}, shapes {got.shape} vs {expected.shape}"
            )

    # Numeric core -----------------------------------------------------------------------------

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for model-shaped arrays, without preprocessing.

        Args:
            x: ``(N, S*S)``, ``(N, S, S)``, ``(N, S, S, 1)`` or one image ``(S, S)``, ``(S*S,)``,
                ``(S, S, 1)``; uint8 0-255, or floats 0-1 (floats above 1 are taken as 0-255).

        Returns:
            float32 ``(N, C)`` (``N = 1`` for one image).

        Raises:
            ImageError: another shape, NaN/inf, or values outside 0-255.
        """
        flat = self._flatten(np.asarray(x))
        if flat.dtype == np.uint8:
            return self._forward(flat, from_255=True)
        if _is_unit(flat):
            return self._forward(flat, from_255=False)
        return self._forward(scale_to_255(flat), from_255=True)

    def _flatten(self, x: np.ndarray) -> np.ndarray:
        s, d = self.image_size, self._input_dim
        shape = x.shape
        if shape in ((s, s), (d,), (s, s, 1)):
            return x.reshape(1, d)
        if (x.ndim == 2 and shape[1] == d) or shape[1:] in ((s, s), (s, s, 1)):
            return x.reshape(len(x), d)
        raise ImageError(
            f"arrays must be ({s}, {s}), ({d},), ({s}, {s}, 1) or a batch (N, {s}, {s}), "
            f"(N, {d}), (N, {s}, {s}, 1); received shape {shape}"
        )

    def _forward(self, x: np.ndarray, from_255: bool) -> np.ndarray:
        """Run the network on rows ``(N, D)``; ``from_255``: pixel values are 0-255, not 0-1."""
        return self.network.predict(x, from_255)

    # Pictures ---------------------------------------------------------------------------------

    def predict(self, item, top_k: int = 3, preprocess: bool | None = None) -> Prediction:
        """Predict one picture.

        Args:
            item: a path, bytes, binary file object, PIL image, or one image array (see the
                module docstring for which arrays are preprocessed).
            top_k: how many of the most likely classes to list.
            preprocess: ``None`` (decide by input type), ``True`` (always), ``False`` (never; a
                picture that is not ``S x S`` is then an error).

        Returns:
            A ``Prediction``.

        Raises:
            ImageError: the picture cannot be decoded or the array is invalid; a batch array.
        """
        if isinstance(item, np.ndarray) and self._is_batch(item):
            raise ImageError(
                f"predict takes one image; received a batch of shape {item.shape}. Use predict_many"
            )
        return self._predict_items([self._prepare(item, preprocess)], top_k)[0]

    def predict_many(self, items, top_k: int = 3, preprocess: bool | None = None):
        """Predict many pictures: a batch array ``(N, ...)`` or an iterable of single items.

        Returns:
            list of ``Prediction``, in input order.

        Raises:
            ImageError: as ``predict``, for the first bad item.
        """
        if isinstance(items, np.ndarray):
            if not self._is_batch(items):
                s, d = self.image_size, self._input_dim
                raise ImageError(
                    f"predict_many takes a batch array (N, {s}, {s}), (N, {d}) or "
                    f"(N, {s}, {s}, 1); received shape {items.shape}. Use predict for one image"
                )
            if preprocess:
                prepared = [self._prepare(a, True) for a in items]
            else:
                flat = self._flatten(items)
                images = _to_unit(flat).reshape(-1, self.image_size, self.image_size)
                prepared = [self._shaped(im) for im in images]
        elif isinstance(items, Iterable) and not isinstance(items, str | bytes | bytearray):
            prepared = [self._prepare(item, preprocess) for item in items]
        else:
            raise ImageError(
                "predict_many takes a batch array or a list of pictures; "
                f"received {type(items).__name__}"
            )
        return self._predict_items(prepared, top_k)

    def _is_batch(self, x: np.ndarray) -> bool:
        s, d = self.image_size, self._input_dim
        if x.shape in ((s, s), (d,), (s, s, 1)):
            return False
        return (x.ndim == 2 and x.shape[1] == d) or x.shape[1:] in ((s, s), (s, s, 1))

    def _prepare(self, item, preprocess: bool | None) -> Preprocessed:
        s = self.image_size
        if isinstance(item, np.ndarray):
            shaped = item.shape in ((s, s), (self._input_dim,), (s, s, 1))
            if shaped and not preprocess:
                return self._shaped(_to_unit(item.reshape(1, -1)).reshape(s, s))
            if preprocess is False:
                raise ImageError(
                    f"the image is not {s}x{s}, so it must be preprocessed; received shape "
                    f"{item.shape}. Pass preprocess=True (or None)"
                )
            if shaped:
                item = item.reshape(s, s)
            return preprocess_image(item, self.preprocess_params)
        if preprocess is False:
            from mnistlab.images import load_image

            gray = load_image(item)
            if gray.shape != (s, s):
                raise ImageError(
                    f"the picture is {gray.shape[1]}x{gray.shape[0]}, the model takes {s}x{s}; "
                    "pass preprocess=True (or None) to fit it"
                )
            return self._shaped(gray / np.float32(255.0))
        return preprocess_image(item, self.preprocess_params)

    def _shaped(self, image: np.ndarray) -> Preprocessed:
        """Wrap an already model-shaped image in [0, 1]; only an empty one gets a status."""
        if float(image.max(initial=0.0)) * 255.0 < self.preprocess_params.min_contrast:
            return Preprocessed(image, "blank", "the image is (nearly) all black: no ink")
        return Preprocessed(image, "ok")

    def _predict_items(self, prepared: list[Preprocessed], top_k: int) -> list[Prediction]:
        if not prepared:
            return []
        batch = np.stack([p.image.reshape(-1) for p in prepared]).astype(np.float32)
        probs = self._forward(batch, from_255=False)
        k = max(0, min(top_k, self.num_classes))
        results = []
        for pre, p in zip(prepared, probs, strict=True):
            p = p.copy()
            if pre.status != "ok":
                results.append(
                    Prediction(None, None, 0.0, p, (), pre.status, pre.message, pre.image)
                )
                continue
            order = np.argsort(-p, kind="stable")[:k]
            best = int(np.argmax(p))
            top = tuple((int(i), self.class_names[i], float(p[i])) for i in order)
            results.append(
                Prediction(
                    best, self.class_names[best], float(p[best]), p, top, "ok", "", pre.image
                )
            )
        return results


# Input checks -----------------------------------------------------------------------------------


def _keras_activation(model) -> str | None:
    """``"softmax"`` when the model's last layer is a softmax (a Softmax layer or activation)."""
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return "softmax"
    return getattr(getattr(last, "activation", None), "__name__", None)


def _is_convnet(model) -> bool:
    return any(type(layer).__name__ in ("Conv2D", "MaxPooling2D") for layer in model.layers)


def _square_input(model) -> tuple[tuple, int]:
    """The model's input shape ``(None, ...)`` and its image side ``S``.

    Raises:
        ModelError: several inputs, a shape that is not fixed, or not a square grayscale image.
    """
    input_shape = tuple(model.input_shape) if hasattr(model, "input_shape") else None
    if not input_shape or isinstance(input_shape[0], tuple | list):
        raise ModelError(
            f"the model must have exactly one input; received input shape {input_shape}"
        )
    dims = input_shape[1:]
    if any(d is None for d in dims):
        raise ModelError(f"the model's input shape must be fixed; received {input_shape}")
    input_dim = math.prod(dims)
    side = math.isqrt(input_dim)
    square = (
        (len(dims) == 1 and side * side == input_dim)
        or (len(dims) == 2 and dims[0] == dims[1])
        or (len(dims) == 3 and dims[0] == dims[1] and dims[2] == 1)
    )
    if not square:
        raise ModelError(
            "the model's input must be square grayscale images, (S, S), (S, S, 1) or "
            f"(S*S,); received {input_shape}"
        )
    return input_shape, side


def _is_unit(a: np.ndarray) -> bool:
    """Floats already in [0, 1] (and finite)."""
    # NaN makes min() NaN and inf makes max() inf, so both fail here without an isfinite pass
    # (which costs a bool copy of the whole batch).
    return a.dtype.kind == "f" and a.size > 0 and bool(a.min() >= 0 and a.max() <= 1)


def _to_unit(flat: np.ndarray) -> np.ndarray:
    """Scale model-shaped pixel values to float32 [0, 1] (rules as ``predict_proba``)."""
    if _is_unit(flat):
        return flat.astype(np.float32)
    return scale_to_255(flat) / np.float32(255.0)


# Saved with a run ---------------------------------------------------------------------------------


def save_checked(model, path, images: np.ndarray, expected: np.ndarray, *,
                 preprocess_params: PreprocessParams | None = None, class_names=None,
                 built: Predictor | None = None) -> dict:
    """Write ``model``'s numpy predictor to ``path`` if it can serve the model and, read back
    from the file, reproduces the model's probabilities.

    Args:
        model: the trained Keras model.
        path: where to write the ``.npz`` (atomically).
        images: uint8 ``(N, S, S)`` test images, 0-255; the first ``VERIFY_IMAGES`` are checked.
        expected: float32 ``(N, C)``, the run's probabilities for ``images`` (Keras', or the
            compiled loop's forward pass: ``mnistlab.finish``).
        preprocess_params, class_names: as ``Predictor.from_model``.
        built: the predictor to save, if made without ``model`` (which is then not read).

    Returns:
        The record for the run's manifest: ``{"file": name, "sha256", "checked_images",
        "max_abs_diff", "rtol", "atol"}``, or ``{"file": None, "reason": why}`` when no file was
        kept (a model the predictor cannot run from arrays, e.g. a convnet the conv engine does
        not read, or a mismatch).
    """
    from pathlib import Path

    from mnistlab.files import sha256_file

    path = Path(path)
    try:
        # No random-batch check through Keras (an eager call: ~0.17 s of every run's finish):
        # the file read back is checked against ``expected`` below, on real images.
        if built is None:
            built = Predictor.from_model(model, preprocess_params, class_names, verify=False)
        built.network.to_arrays()
    except ModelError as e:
        return {"file": None, "reason": str(e)}
    built.save(path)
    n = min(len(images), VERIFY_IMAGES)
    try:
        got = Predictor.from_file(path, preprocess_params, class_names).predict_proba(images[:n])
    except ModelError as e:  # written but not readable back: not kept
        path.unlink(missing_ok=True)
        return {"file": None, "reason": f"the saved predictor cannot be read back: {e}"}
    want = np.asarray(expected[:n], np.float32)
    same = got.shape == want.shape and np.allclose(got, want, VERIFY_RTOL, VERIFY_ATOL)
    diff = float(np.max(np.abs(got - want), initial=0.0)) if got.shape == want.shape else None
    if not same:
        path.unlink(missing_ok=True)
        return {"file": None, "reason": f"the saved predictor differs from the model on "
                f"{n} test images (max abs difference {diff}, shapes {got.shape}, {want.shape})"}
    return {"file": path.name, "sha256": sha256_file(path), "checked_images": n,
            "max_abs_diff": diff, "rtol": VERIFY_RTOL, "atol": VERIFY_ATOL}
