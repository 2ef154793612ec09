"""TrimFinishedTrials on a real Ray Tune search: finished trials lose their metric windows,
shared objects are shared, and the results, the saved experiment state and a restore still work."""

from __future__ import annotations

import pytest
from ray import tune

from paretune.platform.memory import TrimFinishedTrials, release_free_heap, without_tensorboard


def trainable(config):
    for step in range(3):
        tune.report({"score": config["x"] * (step + 1), "other": 1.0})


class Keep(tune.Callback):
    """Holds the trial objects so the test can look at them after fit()."""

    def __init__(self) -> None:
        self.trials: list = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials.append(trial)


def test_finished_trials_are_trimmed_and_results_stay(ray_session, tmp_path):
    keep = Keep()
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2, 3, 4, 5, 6])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(
            name="trim",
            storage_path=str(tmp_path),
            callbacks=[
                keep,
                tune.logger.JsonLoggerCallback(),
                tune.logger.CSVLoggerCallback(),
                TrimFinishedTrials(keep_metrics=["score"], trim_every_s=0.001),
            ],
            verbose=0,
        ),
    )
    with without_tensorboard():
        grid = tuner.fit()
    assert len(keep.trials) == 6 and not grid.errors
    for t in keep.trials:
        assert t.run_metadata.metric_n_steps == {}  # the windows are gone
        # Running statistics stay for the kept metric only.
        assert set(t.run_metadata.metric_analysis) == {"score"}
        assert t.run_metadata.metric_analysis["score"]["max"] == 3 * t.config["x"]
        assert t._default_result_or_future is None
    assert len({id(t.placement_group_factory) for t in keep.trials}) == 1  # one shared object
    assert sorted(r.metrics["score"] for r in grid) == [3, 6, 9, 12, 15, 18]
    assert {r.metrics["other"] for r in grid} == {1.0}  # results are whole
    assert grid.get_best_result("score", "max").config == {"x": 6}
    trial_dirs = [p for p in (tmp_path / "trim").iterdir() if p.is_dir()]
    assert len(trial_dirs) == 6
    for d in trial_dirs:  # Ray's JSON and CSV results, no TensorBoard event file
        names = {p.name for p in d.iterdir()}
        assert {"result.json", "progress.csv"} <= names
        assert not any(n.startswith("events.out.tfevents") for n in names)

    # The saved experiment state restores: every trial is finished with its results.
    restored = tune.Tuner.restore(str(tmp_path / "trim"), trainable=trainable).get_results()
    assert sorted(r.metrics["score"] for r in restored) == [3, 6, 9, 12, 15, 18]


def test_release_free_heap_runs_here():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's; other C libraries are left alone")
    assert release_free_heap() is True
