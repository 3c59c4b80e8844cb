"""Studies on tiny data: trials, pruning, continuing, failures, the study folder and the report."""

from __future__ import annotations

import csv
import dataclasses
import json

import optuna
import pytest
from optuna.trial import TrialState

from mnistlab.config import load_config
from mnistlab.runs import load_run
from mnistlab.tune.errors import TuneError
from mnistlab.tune.study import tune

from .conftest import SPACE


def _study(folder, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def test_study_prunes_continues_and_retrains_the_best(tmp_path, base, space_file):
    events = []
    first = tune(base, space=space_file, trials=4, out=tmp_path, study="s", retrain=False,
                 progress=events.append)
    assert first.ran == 4 and not first.interrupted
    assert first.summary["retrained"] is None
    assert [e["number"] for e in events if e["kind"] == "trial"] == [0, 1, 2, 3]

    # The same call with a larger target continues the study: numbering goes on from 4.
    second = tune(base, space=space_file, trials=7, out=tmp_path, study="s", progress=events.append)
    assert second.ran == 3
    study = _study(first.folder, "s")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(7))
    states = [t.state for t in trials]
    assert TrialState.PRUNED in states, [(t.number, t.state, t.intermediate_values) for t in trials]
    assert TrialState.COMPLETE in states and TrialState.RUNNING not in states
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 and "below the median" in t.user_attrs["fail_reason"]
               for t in pruned)

    # The study folder.
    folder = first.folder
    assert folder == tmp_path / "tune-s"
    with (folder / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == list(range(7))
    assert {r["state"] for r in rows} >= {"COMPLETE", "PRUNED"}
    best = load_config(file=folder / "best.toml")
    assert best.train.epochs == 4 and best.data.dataset == "digits"
    assert best.train.learning_rate == study.best_params["train.learning_rate"]
    assert (folder / "space.toml").read_text() == SPACE

    # The best configuration retrained as an ordinary run reproduces the trial's accuracy.
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["best"]["number"] == study.best_trial.number
    retrained = summary["retrained"]
    run = load_run(folder / retrained["run"])
    assert run.is_complete and run.config == best
    assert retrained["reproduced"] is True
    assert run.history[-1]["val_accuracy"] == study.best_value
    assert retrained["test_accuracy"] == run.metrics["test_accuracy"]
    assert any(e["kind"] == "retrain" for e in events)

    html = (folder / "tune.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert f'href="{retrained["run"]}/report.html"' in html
    assert "http://" not in html and "https://" not in html  # self-contained

    # In Jupyter, the result and a loaded study folder show the same compact summary.
    import mnistlab

    shown = mnistlab.load_study(folder)._repr_html_()
    assert shown == second._repr_html_()
    assert f"#{study.best_trial.number}: validation accuracy {study.best_value:.4f}" in shown
    assert f"retrained test accuracy</th><td style='text-align:left'>" \
           f"{retrained['test_accuracy']:.4f}" in shown
    assert "train.learning_rate" in shown
    assert all(f"{n} {state}" in shown for state, n in second.summary["trials"].items())
    assert f"href='{(folder / 'tune.html').as_posix()}'" in shown
    assert f"href='{(folder / retrained['run'] / 'report.html').as_posix()}'" in shown
    with pytest.raises(TuneError, match="not a study folder"):
        mnistlab.load_study(tmp_path)


def test_failed_trial_is_recorded_with_its_reason(base, space_file):
    # A split whose labels (0..9) do not fit the model's 5-way output: fit_fast refuses it, as it
    # would a real bad combination. The trial fails with the reason; optimize goes on.
    from mnistlab.data import load_dataset
    from mnistlab.tune.objective import Objective
    from mnistlab.tune.space import load_space
    from mnistlab.tune.trainer import split_for

    split = dataclasses.replace(split_for(base, load_dataset("digits")), num_classes=5)
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(load_space(space_file, base), base, split), n_trials=2,
                   catch=(Exception,))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for t in study.trials:
        assert t.user_attrs["fail_reason"].startswith("ModelError: y_train must be int labels")
        assert t.user_attrs["config"]["data"]["dataset"] == "digits"


def test_continuing_with_another_space_is_refused(tmp_path, base, space_file):
    tune(base, space=space_file, trials=1, out=tmp_path, study="x", retrain=False)
    other = tmp_path / "other.toml"
    other.write_text(SPACE.replace("epochs = 4", "epochs = 5"))
    with pytest.raises(TuneError, match="another search space.*--study"):
        tune(base, space=other, trials=2, out=tmp_path, study="x")


@pytest.mark.parametrize("kwargs, expected", [
    ({"study": "../escape"}, "study names"),
    ({"workers": 0}, "at least 1"),
    ({"trials": 0}, "at least 1"),
])
def test_bad_arguments(tmp_path, base, kwargs, expected):
    with pytest.raises(TuneError, match=expected):
        tune(base, out=tmp_path, **kwargs)
