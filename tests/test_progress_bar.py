"""The terminal's progress bar inside long epochs (convnets), and one line per epoch otherwise."""

import io
import math

from mnistlab.cli.progress import EpochProgress, bar_line
from mnistlab.config import load_config
from mnistlab.training import train

LOGS = {"seconds": 3.25, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_redraws_in_place_and_the_epoch_line_replaces_it():
    screen = Terminal()
    bar = EpochProgress(screen, bar_after=0.0)
    bar.step(1, 3, 0, 10, None)
    bar.step(1, 3, 4, 10, {"loss": 0.5, "accuracy": 0.75})
    out = screen.getvalue()
    assert out.startswith("\rEpoch 1/3  4/10 [========>") and "ETA " in out
    assert out.endswith("- loss: 0.5000 - accuracy: 0.7500\x1b[K") and "\n" not in out
    bar(1, 3, LOGS)
    tail = screen.getvalue()[len(out):]
    assert tail == ("\r\x1b[KEpoch 1/3 - 3.25s - loss: 0.5000 - accuracy: 0.7500 - "
                    "val_loss: 0.6000 - val_accuracy: 0.7000\n")


def test_short_epochs_and_pipes_get_only_epoch_lines():
    for stream, after in ((Terminal(), 60.0), (io.StringIO(), 0.0)):
        bar = EpochProgress(stream, bar_after=after)
        bar.step(1, 3, 0, 10, None)
        for i in range(1, 11):
            bar.step(1, 3, i, 10, {"loss": 0.5, "accuracy": 0.75})
        bar(1, 3, LOGS)
        assert stream.getvalue().count("\n") == 1 and "\r" not in stream.getvalue()


def test_bar_line_fits_the_terminal_and_ends_full():
    line = bar_line(2, 15, 422, 422, 12.0, {"loss": 0.25, "accuracy": 0.5}, width=200)
    assert line == "Epoch 2/15 422/422 [====================] ETA 0s - loss: 0.2500 - accuracy: 0.5000"
    assert len(bar_line(2, 15, 1, 422, 1.0, {"loss": 1.0}, width=40)) == 39


class Recorder:
    def __init__(self):
        self.steps, self.epochs = [], []

    def step(self, epoch, epochs, step, steps, logs):
        self.steps.append((epoch, epochs, step, steps, dict(logs or {})))

    def __call__(self, epoch, epochs, logs):
        self.epochs.append(epoch)


def test_a_convnet_epoch_reports_every_step_with_running_figures(tmp_path):
    cfg = load_config("cnn", data__dataset="digits", overrides=[
        'model.conv=[{filters=4, padding="same"}]', "train.epochs=2", "train.batch_size=256"])
    seen = Recorder()
    run = train(cfg, out=tmp_path, progress=seen, report=False)
    steps = math.ceil(run.manifest["dataset"]["n_train"] / 256)
    assert seen.epochs == [1, 2]
    for epoch in (1, 2):
        calls = [s for s in seen.steps if s[0] == epoch]
        assert [s[2] for s in calls] == list(range(steps + 1))
        assert all(s[1] == 2 and s[3] == steps for s in calls)
        assert all(s[4]["loss"] > 0 and 0 <= s[4]["accuracy"] <= 1 for s in calls[1:])
    # the last step's running figures are the epoch's training figures
    last = [s for s in seen.steps if s[0] == 2][-1][4]
    assert math.isclose(last["loss"], run.history[1]["loss"], rel_tol=1e-5)
