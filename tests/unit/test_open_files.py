"""The node's open-file limit (``node.open_files``): raised to what ``api.max_connections`` needs
within the hard limit, and a start refused, naming the setting, when the hard limit is short."""

from __future__ import annotations

import resource

import pytest

from node import open_files


class Limits:
    """A stand-in for the process's RLIMIT_NOFILE (the real one is the test runner's)."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.soft, self.hard = limits


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Limits:
    fake = Limits(1024, 4096)
    monkeypatch.setattr(open_files.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(open_files.resource, "setrlimit", fake.setrlimit)
    return fake


def test_the_soft_limit_is_raised_to_what_the_connections_need(limits: Limits) -> None:
    need = open_files.needed(1000)
    assert need == 1000 + open_files.LEVELDB_OPEN_FILES + open_files.NODE_RESERVE
    assert open_files.ensure(1000) == need
    assert (limits.soft, limits.hard) == (need, 4096)


def test_a_soft_limit_already_high_enough_is_left_alone(limits: Limits) -> None:
    limits.soft = 4000
    assert open_files.ensure(100) == 4000
    assert limits.soft == 4000


def test_a_hard_limit_too_low_refuses_the_start_naming_the_setting(limits: Limits) -> None:
    with pytest.raises(open_files.OpenFilesError) as caught:
        open_files.ensure(3000)
    text = str(caught.value)
    assert "api.max_connections = 3000" in text
    assert "at most 2584" in text  # 4096 less the store's and the node's own share
    assert "ulimit -Hn" in text
    assert limits.soft == 1024  # unchanged


def test_a_hard_limit_below_the_store_s_own_share_says_to_raise_it(limits: Limits) -> None:
    limits.hard = 1200
    with pytest.raises(open_files.OpenFilesError) as caught:
        open_files.ensure(10)
    assert "at most" not in str(caught.value)
    assert ": raise the limit (ulimit -Hn" in str(caught.value)


def test_a_refused_raise_is_a_clear_error(
    limits: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(which: int, new: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(open_files.resource, "setrlimit", refuse)
    with pytest.raises(open_files.OpenFilesError, match=r"from 1024 to 2512.*not allowed"):
        open_files.ensure(1000)
