"""Ctrl-C while a worker pool runs: recorded, then acted on where it is safe."""

import os
import signal
import time

import pytest

from packer.pool import deferred_interrupts


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # let the interpreter run the handler


def test_ctrl_c_is_raised_at_check_not_where_it_lands():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts() as check:
            _ctrl_c()  # recorded only: no exception here
            reached = True
            check()
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_recorded_at_the_end_of_the_block_is_raised_on_leaving_it():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            _ctrl_c()


def test_a_programs_own_handler_is_called_once_and_restored():
    calls = []

    def own(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, own)
    try:
        with deferred_interrupts() as check:
            _ctrl_c()
            _ctrl_c()
            assert calls == []
            check()
            check()
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupts() as check:
            _ctrl_c()
            check()  # nothing happens
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
