"""TrimFinishedTrials on a real Ray Tune search: finished trials lose their metric windows,
shared objects are shared, and the results, the saved experiment state and a restore still work."""

from __future__ import annotations

import pytest
from ray import tune

from paretune.platform import memory
from paretune.platform.memory import (
    RAY_TESTED,
    TrimFinishedTrials,
    fix_malloc_thresholds,
    forget_encoder_log_keys,
    ray_private_parts_supported,
    ray_version,
    release_free_heap,
    share_private_parts,
    without_tensorboard,
)


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
                TrimFinishedTrials(keep_metrics=["score"], trim_every_s=0.001, private_parts=True),
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
    # Equal things are one object: result keys, settings, Ray's second copy of the config.
    first, *others = keep.trials
    key = next(k for k in first.run_metadata.last_result if k == "score")
    for t in others:
        assert next(k for k in t.run_metadata.last_result if k == "score") is key
        assert t.storage.syncer is first.storage.syncer
        assert t.storage.sync_config is first.storage.sync_config
        ckpt = t.run_metadata.checkpoint_manager._checkpoint_config
        assert ckpt is first.run_metadata.checkpoint_manager._checkpoint_config
    for t in keep.trials:
        assert t.run_metadata.last_result["config"] is t.config
        assert t.__dict__["_Trial__unresolved_config"] is t.config
        assert t.storage.trial_dir_name  # each trial keeps its own directory
    assert len({t.storage.trial_dir_name for t in keep.trials}) == 6
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


def test_forget_encoder_log_keys_drops_only_the_encoders():
    from ray.util import debug

    debug._logged.update({"tune_func_encode:<StorageContext x>", "some_other_key"})
    assert forget_encoder_log_keys() >= 1
    assert "some_other_key" in debug._logged
    assert not any(k.startswith("tune_func_encode:") for k in debug._logged)
    debug._logged.discard("some_other_key")


def test_fix_malloc_thresholds_runs_here():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's; other C libraries are left alone")
    assert fix_malloc_thresholds() is True


def test_installed_ray_is_one_the_private_parts_were_tested_with():
    # A Ray upgrade fails here first: check the private attributes share_private_parts
    # touches (the trimming test above does, on real trials), then widen RAY_TESTED and the
    # bound in pyproject.toml.
    assert ray_private_parts_supported(), (ray_version(), RAY_TESTED)


def test_outside_the_tested_ray_versions_nothing_private_is_touched(monkeypatch, caplog):
    monkeypatch.setattr(memory, "RAY_TESTED", ((0, 1), (0, 2)))
    monkeypatch.setattr(memory, "_WARNED", [])

    class Bare:  # no private attribute at all: touching one would raise
        config = {"x": 1}

    share_private_parts(Bare(), lambda o: o, reported=True)
    assert forget_encoder_log_keys() == 0
    assert "outside the versions" in caplog.text


def test_the_default_path_touches_no_private_attribute_of_ray(monkeypatch):
    # Ray's private attributes are trimmed only on request (PARETUNE_RAY_PRIVATE_TRIM=1).
    monkeypatch.delenv(memory.PRIVATE_TRIM_ENV, raising=False)
    assert TrimFinishedTrials().private_parts is False
    monkeypatch.setenv(memory.PRIVATE_TRIM_ENV, "1")
    assert TrimFinishedTrials().private_parts is True

    def forbidden(*args, **kwargs):
        raise AssertionError("share_private_parts called on the default path")

    monkeypatch.setattr(memory, "share_private_parts", forbidden)

    class Meta:
        metric_n_steps: dict = {}
        metric_analysis: dict = {}
        last_result: dict = {"trial_id": "t", "score": 1.0}

    class FakeTrial:
        run_metadata = Meta()

    TrimFinishedTrials(private_parts=False)._trim(FakeTrial(), errored=False)
