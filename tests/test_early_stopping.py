"""utils/train/early_stopping.py: the one early stopping of the three trainers."""
import math

from utils.train.early_stopping import EarlyStopping


def test_improvement_and_stop_after_patience():
    s = EarlyStopping(patience=2)
    assert s.step(1.0) is True
    assert s.step(0.5) is True
    assert s.step(0.7) is False and not s.should_stop
    assert s.step(0.6) is False and s.should_stop
    assert s.best == 0.5 and s.best_epoch == 1


def test_min_delta_requires_real_improvement():
    s = EarlyStopping(patience=5, min_delta=0.1)
    s.step(1.0)
    assert s.step(0.95) is False
    assert s.step(0.85) is True
    assert math.isclose(s.best, 0.85)


def test_nan_never_improves():
    s = EarlyStopping(patience=2)
    assert s.step(float("nan")) is False
    assert s.best == math.inf
    assert s.step(float("nan")) is False
    assert s.should_stop
    s2 = EarlyStopping(patience=3)
    s2.step(1.0)
    assert s2.step(float("nan")) is False and s2.best == 1.0


def test_state_dict_round_trip():
    s = EarlyStopping(patience=3, min_delta=0.01)
    for v in (1.0, 0.8, 0.9):
        s.step(v)
    t = EarlyStopping()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()
    assert t.step(0.95) is False and t.step(0.99) is False and t.should_stop
