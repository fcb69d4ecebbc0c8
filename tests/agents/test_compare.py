"""The comparison's configuration, curve aggregation, summary and resumable results file."""

import json
import math

import numpy as np
import pytest

from hybridgym.agents.compare import CompareConfig, Comparison, aggregate_curves


def test_aggregate_curves_carries_stopped_runs_forward():
    # run a stops at 100 (its threshold), run b is evaluated at 50 and 150, run c from 100 on
    steps, median, low, high = aggregate_curves(
        [[(50, -900.0), (100, -150.0)], [(50, -700.0), (150, -100.0)], [(100, -300.0)]]
    )
    assert steps.tolist() == [50, 100, 150]
    # at 50: a and b; at 100: a, b (still -700) and c; at 150: a keeps -150, b, c keeps -300
    assert median.tolist() == [-800.0, -300.0, -150.0]
    assert low.tolist() == [-900.0, -700.0, -300.0]
    assert high.tolist() == [-700.0, -150.0, -100.0]


def test_aggregate_curves_of_one_run_is_that_run():
    steps, median, low, high = aggregate_curves([[(20, 1.0), (10, 2.0)]])
    assert steps.tolist() == [10, 20] and median.tolist() == [2.0, 1.0]
    assert np.array_equal(low, median) and np.array_equal(high, median)


def test_thresholds_come_from_the_task_or_the_config():
    assert CompareConfig("pendulum", budget=100).resolved_threshold == -200.0
    assert CompareConfig("lotka_volterra", budget=100).resolved_threshold is None
    assert CompareConfig("lotka_volterra", budget=100, threshold=-5).resolved_threshold == -5.0


def test_the_loop_gets_as_many_iterations_as_the_budget_allows():
    # pendulum: 50 random steps, then 50 per iteration
    config = CompareConfig("pendulum", budget=175, seeds=2)
    loop = config.loop_config(1)
    assert (loop.iterations, loop.seed, loop.stop_return) == (3, 1, -200.0)
    assert loop.target_steps(loop.iterations) == 150
    assert CompareConfig("pendulum", budget=50).loop_config(0).iterations == 1
    # the cart-pole's schedule: 20 random steps, then 50, 50, 200, 200, ...
    assert CompareConfig("cartpole_swingup", budget=320).loop_config(0).iterations == 4
    assert config.resolved_eval_every == 10  # budget // 16


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"task": "pendulm", "budget": 10}, "Did you mean 'pendulum'"),
        ({"task": "pendulum", "budget": -1}, "budget must be an int >= 1"),
        ({"task": "pendulum", "budget": 100, "seeds": 0}, "seeds must be an int >= 1"),
        ({"task": "pendulum", "budget": 100, "methods": ("loop", "sax")}, "did you mean 'sac'"),
        ({"task": "pendulum", "budget": 100, "methods": ()}, "at least one"),
        ({"task": "pendulum", "budget": 100, "loop": {"seed": 3}}, "set by the comparison"),
        ({"task": "pendulum", "budget": 100, "threshold": math.nan}, "finite"),
    ],
)
def test_bad_configurations_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        CompareConfig(**kwargs)


def test_a_budget_below_the_loops_first_iteration_is_refused_before_writing(tmp_path):
    config = CompareConfig("pendulum", budget=30)
    with pytest.raises(ValueError, match="below the loop's first iteration"):
        Comparison(config, tmp_path / "out")
    with pytest.raises(ValueError, match="got unexpected keyword"):
        Comparison(
            CompareConfig("pendulum", budget=30, methods=("sac",), model_free={"lr": 1}),
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


def test_results_survive_each_trial_and_a_rerun_resumes(tmp_path):
    # model-free SAC only, tiny: 40 real Lotka-Volterra steps, evaluated every 20
    kwargs = {
        "budget": 40,
        "methods": ("sac",),
        "eval_episodes": 1,
        "eval_every": 20,
        "threshold": -60.0,
        "model_free": {"learning_starts": 10, "policy_kwargs": {"net_arch": [8]}},
    }
    first = Comparison(CompareConfig("lotka_volterra", seeds=1, **kwargs), tmp_path)
    assert first.pending() == [("sac", 0)]
    trial = first.run_trial("sac", 0)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["trials"]["sac"]["0"] == json.loads(json.dumps(trial))
    assert trial["curve"][0][0] == 20 and trial["final_real_steps"] <= 40
    assert trial["final_return_mean"] == pytest.approx(trial["curve"][-1][1])
    reached = next((s for s, r in trial["curve"] if r >= -60.0), None)
    assert trial["steps_to_threshold"] == reached

    # more seeds: the recorded one is kept, only the new one is pending
    second = Comparison(CompareConfig("lotka_volterra", seeds=2, **kwargs), tmp_path)
    assert second.pending() == [("sac", 1)]
    assert second.trial("sac", 0) == stored["trials"]["sac"]["0"]
    # other settings: refused, the folder untouched
    with pytest.raises(ValueError, match="budget: 40 there, 60 now"):
        Comparison(CompareConfig("lotka_volterra", seeds=2, **{**kwargs, "budget": 60}), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == stored


def test_summary_counts_unreached_seeds_as_infinitely_many_steps(tmp_path):
    comparison = Comparison(
        CompareConfig("pendulum", budget=100, seeds=3, methods=("sac",)), tmp_path
    )

    def trial(steps, final):
        return {
            "curve": [[50, final]],
            "steps_to_threshold": steps,
            "final_real_steps": 100 if steps is None else steps,
            "final_return_mean": final,
            "wall_seconds": 2.0,
            "total_seconds": 3.0,
        }

    trials = comparison.results["trials"].setdefault("sac", {})
    trials.update({"0": trial(50, -150.0), "1": trial(None, -400.0)})
    summary = comparison.summary()["sac"]
    assert summary["steps_to_threshold_median"] is None  # median of (50, inf)
    trials["2"] = trial(100, -170.0)
    summary = comparison.summary()["sac"]
    assert summary["steps_to_threshold_median"] == 100  # median of (50, 100, inf)
    assert (summary["seeds"], summary["reached_threshold"]) == (3, 2)
    assert summary["final_return_mean"] == pytest.approx(np.mean([-150, -400, -170]))
    assert summary["final_return_std"] == pytest.approx(np.std([-150, -400, -170]))
    assert comparison.table_rows() == [
        ["SAC (model-free)", "100", "2/3", "100", "-240.0 +- 113.4", "2.0", "3.0"]
    ]


def test_trials_are_written_in_one_order_whatever_order_they_finish(tmp_path):
    config = CompareConfig("pendulum", budget=100, seeds=3, methods=("sac", "ppo"))

    def trial(final):
        return {
            "curve": [[100, final]],
            "steps_to_threshold": None,
            "seconds_to_threshold": None,
            "final_real_steps": 100,
            "final_return_mean": final,
            "final_return_std": 0.0,
            "wall_seconds": 1.0,
            "total_seconds": 2.0,
        }

    finished = [("ppo", 2), ("sac", 1), ("ppo", 0), ("sac", 0)]
    texts = []
    for k, order in enumerate((finished, finished[::-1])):
        comparison = Comparison(config, tmp_path / str(k))
        for method, seed in order:
            comparison.record_trial(method, seed, trial(-1000.0 - seed))
        text = (tmp_path / str(k) / "results.json").read_text()
        texts.append(json.dumps(json.loads(text)["trials"]))
        # the configuration's methods in its order, each one's seeds by number
        stored = json.loads(text)["trials"]
        assert [(m, list(by_seed)) for m, by_seed in stored.items()] == [
            ("sac", ["0", "1"]),
            ("ppo", ["0", "2"]),
        ]
    assert texts[0] == texts[1]
    with pytest.raises(ValueError, match=r"\('td3', 0\) is not a trial of this comparison"):
        comparison.record_trial("td3", 0, trial(-1.0))
