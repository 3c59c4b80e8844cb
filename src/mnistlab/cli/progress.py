"""What ``train`` and ``rerun`` print while training: one line per epoch, and on a terminal a
progress bar inside any epoch that takes longer than about two seconds (a convnet's).

The bar looks like Keras' ``verbose=1``: steps done, a bar, the time left in the epoch and the
running loss and accuracy. It redraws one line in place (at most ten times a second) and is
replaced by the epoch's line when the epoch ends. Without a terminal (a log file, CI) only the
epoch lines are printed, as before.
"""

from __future__ import annotations

import shutil
import sys
import time

BAR_AFTER_S = 2.0  # an epoch shorter than this never shows a bar
REDRAW_S = 0.1


def epoch_line(epoch: int, epochs: int, logs: dict) -> str:
    return (
        f"Epoch {epoch}/{epochs} - {logs['seconds']:.2f}s - loss: {logs['loss']:.4f} - "
        f"accuracy: {logs['accuracy']:.4f} - val_loss: {logs['val_loss']:.4f} - "
        f"val_accuracy: {logs['val_accuracy']:.4f}"
    )


def bar_line(epoch: int, epochs: int, step: int, steps: int, elapsed: float, logs: dict,
             width: int) -> str:
    """``Epoch 3/15  120/422 [======>.............] ETA 9s - loss: 0.4012 - accuracy: 0.8571``,
    cut to ``width`` characters."""
    cells = 20
    done = min(cells, cells * step // max(steps, 1))
    bar = "=" * done + (">" if done < cells else "") + "." * max(0, cells - done - 1)
    eta = elapsed / step * (steps - step) if step else 0.0
    figures = "".join(f" - {k}: {logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs)
    count = f"{step:>{len(str(steps))}}/{steps}"
    line = f"Epoch {epoch}/{epochs} {count} [{bar}] ETA {eta:.0f}s{figures}"
    return line[: max(width - 1, 10)]


class EpochProgress:
    """``progress`` for ``mnistlab.training.train``: called with ``(epoch, epochs, logs)`` after
    every epoch; ``step(epoch, epochs, step, steps, logs)`` inside an epoch (step 0 at its
    start; logs hold the running loss and accuracy)."""

    def __init__(self, stream=None, bar_after: float = BAR_AFTER_S):
        self.stream = stream or sys.stdout
        self.bar_after = bar_after
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._drawn = 0.0  # when the bar was last drawn; 0: not on screen

    def step(self, epoch: int, epochs: int, step: int, steps: int, logs: dict | None) -> None:
        now = time.perf_counter()
        if step == 0:
            self._start = now
            return
        if not self.tty or now - self._start < self.bar_after or now - self._drawn < REDRAW_S:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        line = bar_line(epoch, epochs, step, steps, now - self._start, logs or {}, width)
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = now

    def __call__(self, epoch: int, epochs: int, logs: dict) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")  # the bar's line becomes the epoch's line
            self._drawn = 0.0
        self.stream.write(epoch_line(epoch, epochs, logs) + "\n")
        self.stream.flush()
        self._start = time.perf_counter()
