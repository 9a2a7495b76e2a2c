"""A resumed run's changed settings are said with their noun agreeing: "the new value" for one changed value,
"the new values" for two; the same for intervals (were "value(s)", "interval(s)")."""

from wavegen.config import TrainConfig
from wavegen.trainstate import resume_warnings


def test_one_changed_value_is_the_new_value_and_two_the_new_values():
    one = resume_warnings(TrainConfig(lr=1e-4, max_steps=8), 2, {"lr": 1e-3})
    assert one == ["train.lr 0.001 → 0.0001: the run goes on from step 2 with the new value, recorded in its "
                   "config.json"]
    two = resume_warnings(TrainConfig(lr=1e-4, grad_clip=2.0, max_steps=8), 2, {"lr": 1e-3, "grad_clip": 1.0})
    assert two == ["train.lr 0.001 → 0.0001 and train.grad_clip 1 → 2: the run goes on from step 2 with the new "
                   "values, recorded in its config.json"]


def test_one_changed_interval_is_the_new_interval_and_two_the_new_intervals():
    one = resume_warnings(TrainConfig(val_interval=3, max_steps=8), 2, {"val_interval": 2})
    assert one == ["train.val_interval 2 → 3: the run goes on from step 2 at the new interval, recorded in its "
                   "config.json"]
    two = resume_warnings(TrainConfig(val_interval=3, sample_interval=5, max_steps=8), 2,
                          {"val_interval": 2, "sample_interval": 4})
    assert two == ["train.val_interval 2 → 3 and train.sample_interval 4 → 5: the run goes on from step 2 at the new "
                   "intervals, recorded in its config.json"]
