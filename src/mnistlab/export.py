"""Export a run's model to ONNX, LiteRT or a TF SavedModel, and prove the export is the same model.

Every export goes through Keras' own ``model.export(path, format=...)``. Keras can only write these
formats from its TensorFlow backend (ONNX through tf2onnx, LiteRT through the TFLite converter), and
runs train on JAX, so the export itself happens in a child process started with
``KERAS_BACKEND=tensorflow`` that loads the run's model safely (``Run.load_model``) and writes the
files (``python -m mnistlab.export``, internal). Back in this process, each file is loaded with its
own runtime (onnxruntime, the LiteRT interpreter, ``tf.saved_model.load``) and its probabilities on
the run's test images are compared with the Keras model's on the run's own backend. An export that
differs by more than ``MAX_ABS_DIFF`` or disagrees on one label is refused (``ExportError``).

Each export and its parity figures are recorded in the run directory's ``export.json``, and a run
that has a ``report.html`` gets it rebuilt to show them.

TensorFlow, oneDNN and the LiteRT interpreter write information and warnings from C++ straight to
the process's stderr on every start, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (absl writes what it
logs before its own initialisation to stderr unconditionally). That chatter is filtered out of the
child's stderr and, while the runtimes check the files, out of this process's: only error lines are
passed on, through ``logging``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from mnistlab.errors import ConfigError, ExportError, MnistlabError, RunError
from mnistlab.files import load_npz, sha256_file, write_json
from mnistlab.runs import Run, as_run, utc_now

# CLI name -> (Keras format name, default file name under <run>/export/)
FORMATS = {
    "onnx": ("onnx", "model.onnx"),
    "litert": ("litert", "model.tflite"),
    "savedmodel": ("tf_saved_model", "saved_model"),
}
EXPORT_JSON = "export.json"
MAX_ABS_DIFF = 1e-5
N_IMAGES = 1000
# What the child process needs, per format, beyond TensorFlow itself.
_NEEDS = {"onnx": ["tf2onnx"], "litert": [], "savedmodel": []}
_RUNTIMES = {"onnx": "onnxruntime", "litert": "ai-edge-litert", "savedmodel": "tensorflow-cpu"}
_CHILD_TIMEOUT_S = 900

log = logging.getLogger(__name__)

# Informational lines of absl/glog ("I0000 00:00:..." and "W..."), LiteRT ("INFO: ...") and absl's
# note about its own start-up: chatter. Error lines: absl/glog "E"/"F" lines, LiteRT "ERROR: ...",
# and Python's exception lines.
_CHATTER = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:|INFO: |WARNING: All log messages before absl::InitializeLog\(\))"
)
_ERROR = re.compile(r"^(?:[EF]\d{4} \d\d:\d\d:|(?:ERROR|FATAL|Error)\b|Traceback |\w+(?:Error|Exception): )")


def check_formats(formats) -> list[str]:
    """Validate format names and return them as a list without duplicates.

    Raises:
        ConfigError: no format, or a name that is not in ``FORMATS``.
    """
    if isinstance(formats, str):
        formats = [formats]
    out = list(dict.fromkeys(formats))
    bad = [f for f in out if f not in FORMATS]
    if not out or bad:
        raise ConfigError(
            f"unknown export format {', '.join(map(repr, bad)) or '(none)'}. "
            f"Choose from: {', '.join(FORMATS)}. Received: {list(formats)!r}"
        )
    return out


def default_path(run_path: str | Path, fmt: str) -> Path:
    """Where ``fmt`` is written when no ``--out`` is given: ``<run>/export/<file>``."""
    return Path(run_path) / "export" / FORMATS[fmt][1]


def export_run(
    run: Run | str | Path,
    formats,
    *,
    out: str | Path | None = None,
    n_images: int = N_IMAGES,
) -> dict[str, dict]:
    """Export a run's model, check each export against the Keras model, record it in export.json.

    Args:
        run: a complete run (a ``Run``, or its directory).
        formats: ``"onnx"``, ``"litert"``, ``"savedmodel"`` or a list of them.
        out: file (or folder, for savedmodel) to write; only with a single format. Default:
            ``<run>/export/model.onnx``, ``model.tflite`` or ``saved_model/``.
        n_images: how many of the run's test images the parity check uses (at most all of them).

    Returns:
        ``{format: record}``; each record holds ``path``, ``bytes``, ``sha256``, ``max_abs_diff``,
        ``label_agreement``, ``n_images``, ``ok``, ``runtime``, ``exported_at``.

    Raises:
        ConfigError: unknown format, ``out`` with several formats, or ``n_images`` < 1.
        RunError: the run is missing or incomplete. ModelError: its model file fails its checks.
        ExportError: a tool is missing, Keras could not export, or an export does not match the
            Keras model (its record, with ``ok: false``, is still written to export.json).
    """
    formats = check_formats(formats)
    if out is not None and len(formats) > 1:
        raise ConfigError(
            f"--out names one file but {len(formats)} formats were asked for ({', '.join(formats)}). "
            "Export one format at a time with --out, or leave --out out to use <run>/export/"
        )
    if n_images < 1:
        raise ConfigError(f"the parity check needs at least 1 image; received n_images={n_images}")
    run = as_run(run)
    targets = {f: Path(out) if out is not None else default_path(run.path, f) for f in formats}
    for f in formats:
        _require(f)
    for path in targets.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write_exports(run, targets)

    images, expected = _reference(run, n_images)
    records = {f: _compare(f, p, images, expected) for f, p in targets.items()}
    for f, p in targets.items():
        records[f] = {"path": _display_path(p, run.path), "bytes": _size(p), "sha256": _digest(p),
                      **records[f], "exported_at": utc_now()}
    record_exports(run, records)
    bad = {f: r for f, r in records.items() if not r["ok"]}
    if bad:
        raise ExportError("; ".join(_mismatch_text(f, r) for f, r in bad.items()))
    _refresh_report(run)
    return records


def _refresh_report(run: Run) -> None:
    """Rebuild the run's report.html so it shows the exports; a run without a report gets none."""
    if not run.file("report.html").is_file():
        return
    from mnistlab.report import build_report

    try:
        build_report(run.path)
    except MnistlabError as e:  # the exports themselves are good and recorded
        log.warning("the exports are recorded in export.json, but report.html could not be "
                    "rebuilt (%s). Rebuild it with `mnistlab report %s`", e, run.path)


# ---------------------------------------------------------------------------------------------
# Writing: Keras' exporters on the TensorFlow backend
# ---------------------------------------------------------------------------------------------


def _require(fmt: str) -> None:
    missing = [m for m in ["tensorflow", *_NEEDS[fmt]] if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"exporting to {fmt} needs {', '.join(missing)}, which is not installed. Install the "
            "export extras: pip install 'mnistlab[export]'"
        )


def write_exports(run: Run | str | Path, targets: dict[str, Path]) -> None:
    """Write each ``{format: path}`` of a run's model with Keras' exporter on TensorFlow.

    In a process already on the TensorFlow backend this happens here; otherwise in a child process
    (``python -m mnistlab.export``) started with ``KERAS_BACKEND=tensorflow``.

    Raises:
        ExportError: the child failed or timed out (its last error lines are in the message).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        _write_here(as_run(run), targets)
        return
    run_path = run.path if isinstance(run, Run) else run
    args = [sys.executable, "-m", "mnistlab.export", str(run_path)]
    for fmt, path in targets.items():
        args += [fmt, str(path)]
    # Level 2 drops TensorFlow's C++ information and warnings but keeps its errors (3 would hide
    # them too); what the variables cannot reach is filtered from the captured stderr below.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "GLOG_minloglevel": "2"}
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"the TensorFlow export process did not finish in {_CHILD_TIMEOUT_S} s; nothing was "
            f"recorded. Retry, or export one format at a time. Command: {' '.join(args)}"
        ) from None
    if done.returncode == 0:
        _pass_on_errors(done.stderr)
        return
    lines = [line for line in done.stderr.strip().splitlines() if not _CHATTER.match(line)]
    tail = "\n".join(lines[-12:])
    raise ExportError(
        f"Keras could not export {', '.join(targets)} from {run_path} (TensorFlow backend, "
        f"exit code {done.returncode}). Its last lines:\n{tail}"
    )


def _write_here(run: Run, targets: dict[str, Path]) -> None:
    """Load the run's model on this (TensorFlow) backend and export each format atomically."""
    import warnings

    model = run.load_model()
    # Keras exports only models that have been called; a loaded model has not been yet.
    model(np.zeros((1, *model.input_shape[1:]), dtype=np.float32))
    for fmt, path in targets.items():
        keras_format = FORMATS[fmt][0]
        # Write into a temporary sibling, then move it in place: a failed export never leaves a
        # half-written file where a good one was.
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        staged = tmp / path.name
        try:
            with warnings.catch_warnings():
                # Keras' tf2onnx shim probes np.object, which NumPy 2 answers with a FutureWarning.
                warnings.simplefilter("ignore", FutureWarning)
                model.export(str(staged), format=keras_format, verbose=False)
            _replace(staged, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _pass_on_errors(text: str) -> None:
    """Log the error lines of a runtime's stderr output; drop its chatter."""
    for line in text.splitlines():
        if _ERROR.match(line):
            log.warning("TensorFlow/LiteRT: %s", line.strip())


@contextlib.contextmanager
def _native_stderr_filtered():
    """Catch what native code writes to stderr meanwhile and pass on only its error lines.

    TensorFlow, oneDNN and LiteRT write from C++ to file descriptor 2, out of reach of
    ``sys.stderr``; so descriptor 2 itself points at a temporary file for the duration. The
    redirection is process-wide: for a command line, not for a threaded server.
    """
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            _pass_on_errors(sink.read().decode("utf-8", "replace"))


def _replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (a file or a folder), replacing what was there."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


# ---------------------------------------------------------------------------------------------
# Checking: each export in its own runtime against the Keras model
# ---------------------------------------------------------------------------------------------


def parity_images(run: Run | str | Path, n_images: int = N_IMAGES) -> np.ndarray:
    """The first ``n_images`` test images stored with the run, uint8 ``(N, H, W)``.

    Args:
        run: a ``Run`` or its directory (which need not be complete).

    Raises:
        RunError: predictions.npz is missing or unreadable.
    """
    path = (run.path if isinstance(run, Run) else Path(run)) / "predictions.npz"
    if not path.is_file():
        raise RunError(f"{path} is missing; the run is incomplete. Train it again")
    try:
        return load_npz(path, keys=("images",))["images"][:n_images]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise RunError(f"{path} is unreadable ({e}); the run directory is damaged") from None


def run_export(fmt: str, path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run an exported model in its own runtime.

    Args:
        fmt: ``"onnx"``, ``"litert"`` or ``"savedmodel"``.
        path: the exported file (folder for savedmodel).
        x: float32 ``(N, H, W)`` in [0, 1].

    Returns:
        float32 ``(N, C)`` probabilities.

    Raises:
        ExportError: the runtime is not installed or cannot load the file.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        with _native_stderr_filtered():
            out = _run_in_runtime(fmt, path, x)
    except ImportError as e:
        raise ExportError(
            f"cannot check the {fmt} export: {e}. Install the export extras: "
            "pip install 'mnistlab[export]'"
        ) from None
    except Exception as e:  # each runtime raises its own exception types for a bad file
        raise ExportError(f"the {fmt} runtime cannot run {path}: {type(e).__name__}: {e}") from None
    return np.asarray(out, dtype=np.float32)


def _run_in_runtime(fmt: str, path: str | Path, x: np.ndarray):
    """``run_export``'s work, in the format's runtime; the runtime's own exceptions propagate."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if fmt == "litert":
        interpreter = _litert_interpreter(str(path))
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
    return loaded.serve(tf.constant(x)).numpy()


def _litert_interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - TensorFlow's older home of the same class
    return Interpreter(model_path=path)


def _runtime_name(fmt: str) -> str:
    package = _RUNTIMES[fmt]
    if fmt == "litert" and importlib.util.find_spec("ai_edge_litert") is None:
        package = "tensorflow-cpu"
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return package


def parity(run: Run | str | Path, fmt: str, path: str | Path, n_images: int = N_IMAGES) -> dict:
    """Compare an export with the run's Keras model on the run's test images.

    Args:
        run: the run the export was made from (a ``Run`` or its directory).
        fmt: the export's format.
        path: the exported file (folder for savedmodel).
        n_images: how many test images to use (at most all of them).

    Returns:
        ``{"max_abs_diff", "label_agreement", "n_images", "ok", "runtime"}``; ``ok`` is true when
        ``max_abs_diff <= MAX_ABS_DIFF`` and every predicted label agrees.

    Raises:
        ExportError: the runtime cannot load or run the file, or its output has the wrong shape.
    """
    fmt = check_formats(fmt)[0]
    images, expected = _reference(as_run(run), n_images)
    return _compare(fmt, path, images, expected)


def _reference(run: Run, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The parity images (uint8 ``(N, H, W)``) and the Keras model's probabilities on them."""
    from mnistlab.evaluation import predict_proba

    images = parity_images(run, n_images)
    return images, predict_proba(run.load_model(), images)


def _compare(fmt: str, path: str | Path, images: np.ndarray, expected: np.ndarray) -> dict:
    from mnistlab.model import to_input

    got = run_export(fmt, path, to_input(images))
    if got.shape != expected.shape:
        raise ExportError(
            f"the {fmt} export at {path} returned shape {got.shape}; the Keras model returns "
            f"{expected.shape}. The file does not hold this run's model"
        )
    max_diff = float(np.max(np.abs(got - expected)))
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
    return {
        "max_abs_diff": max_diff, "label_agreement": agreement, "n_images": int(len(images)),
        "ok": bool(max_diff <= MAX_ABS_DIFF and agreement == 1.0), "runtime": _runtime_name(fmt),
    }


def verify_export(run: Run | str | Path, fmt: str, path: str | Path, n_images: int = N_IMAGES) -> dict:
    """Like ``parity`` but refuse a mismatch.

    Raises:
        ExportError: the export differs from the Keras model (figures in the message).
    """
    result = parity(run, fmt, path, n_images)
    if not result["ok"]:
        raise ExportError(_mismatch_text(fmt, {**result, "path": str(path)}))
    return result


def _mismatch_text(fmt: str, r: dict) -> str:
    return (
        f"the {fmt} export at {r['path']} does not match the Keras model: max |Δ probability| "
        f"{r['max_abs_diff']:.3g} (allowed {MAX_ABS_DIFF:g}), labels agree on "
        f"{r['label_agreement']:.2%} of {r['n_images']} test images (required 100%). Do not use "
        "it; export again, and report a bug if it persists"
    )


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------


def record_exports(run: Run | str | Path, records: dict[str, dict]) -> dict:
    """Merge ``{format: record}`` into ``<run>/export.json`` (written atomically); return it all.

    An unreadable export.json is replaced rather than trusted.
    """
    path = (run.path if isinstance(run, Run) else Path(run)) / EXPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("formats"), dict):
            data = {"formats": {}}
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        data = {"formats": {}}
    data["formats"].update(records)
    write_json(path, data)
    return data


def _display_path(path: Path, run_path: Path) -> str:
    """The path relative to the run directory when it is inside it (so runs can move)."""
    try:
        return str(path.resolve().relative_to(run_path.resolve()))
    except ValueError:
        return str(path.resolve())


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def _digest(path: Path) -> str:
    """sha256 of a file; of a folder, sha256 over its sorted ``relative path + file sha256`` lines."""
    if not path.is_dir():
        return sha256_file(path)
    import hashlib

    lines = "".join(f"{p.relative_to(path).as_posix()}  {sha256_file(p)}\n" for p in _files(path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _child_main(argv: list[str]) -> int:
    """``python -m mnistlab.export RUN FORMAT PATH [FORMAT PATH ...]``: write exports, no checks."""
    import keras

    from mnistlab.errors import MnistlabError

    if len(argv) < 3 or len(argv) % 2 == 0:
        sys.stderr.write("usage: python -m mnistlab.export RUN FORMAT PATH [FORMAT PATH ...]\n")
        return 2
    if keras.backend.backend() != "tensorflow":
        sys.stderr.write("set KERAS_BACKEND=tensorflow: Keras exports these formats from TensorFlow\n")
        return 2
    run, pairs = argv[0], argv[1:]
    try:
        targets = {f: Path(p) for f, p in zip(pairs[::2], pairs[1::2], strict=True)}
        check_formats(list(targets))
        _write_here(as_run(run), targets)
    except MnistlabError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    except Exception as e:  # Keras/TensorFlow failures: keep the traceback, end on one clear line
        import traceback

        traceback.print_exc()
        sys.stderr.write(f"Error: {type(e).__name__}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
