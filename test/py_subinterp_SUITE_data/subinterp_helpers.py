"""Helpers for py_subinterp_SUITE."""
import sys
import time


def interp_token(secs):
    """Sleeps (so that concurrent calls spread over the workers), then
    names the interpreter it ran in: its sys.modules, one per interpreter."""
    time.sleep(secs)
    return id(sys.modules)
