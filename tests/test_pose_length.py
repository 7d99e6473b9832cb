"""fit_length: trim / loop / pingpong / hold."""

from __future__ import annotations

import pytest

from echomimic_core.errors import InputError
from echomimic_core.pose import PoseSequence, empty_frame, fit_length, fit_length_indices


def test_indices():
    assert fit_length_indices(5, 3, "loop") == [0, 1, 2]
    for policy in ("trim", "loop", "pingpong", "hold"):
        assert fit_length_indices(4, 4, policy) == [0, 1, 2, 3]
        assert fit_length_indices(4, 2, policy) == [0, 1]
        assert fit_length_indices(4, 0, policy) == []
    assert fit_length_indices(3, 8, "loop") == [0, 1, 2, 0, 1, 2, 0, 1]
    assert fit_length_indices(4, 11, "pingpong") == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert fit_length_indices(1, 3, "pingpong") == [0, 0, 0]
    assert fit_length_indices(3, 6, "hold") == [0, 1, 2, 2, 2, 2]
    with pytest.raises(InputError, match="trim"):
        fit_length_indices(3, 6, "trim")
    with pytest.raises(InputError, match="unknown"):
        fit_length_indices(3, 6, "bounce")
    with pytest.raises(InputError):
        fit_length_indices(0, 2, "loop")
    with pytest.raises(InputError):
        fit_length_indices(3, -1, "loop")


def test_fit_length_shares_frames():
    frames = [dict(empty_frame(), num=k) for k in range(3)]
    seq = PoseSequence(frames, fps=25.0)
    out = fit_length(seq, 7, "pingpong")
    assert len(out) == 7 and out.fps == 25.0 and out.draw_params == seq.draw_params
    assert [f["num"] for f in out] == [0, 1, 2, 1, 0, 1, 2]
    assert out[4] is frames[0]
    assert len(fit_length(seq, 2, "trim")) == 2
