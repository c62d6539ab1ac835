"""Stand-in for the `mymod' of the original type-conversion guide."""


def func(*args):
    return [type(a).__name__ for a in args]
