"""Python helpers for py_context_SUITE (this directory is put on sys.path
through the application env `python_path`)."""


class Model:
    """A picklable stand-in for a trained model: predict() weights row sums."""

    def __init__(self, weight):
        self.weight = weight

    def predict(self, rows):
        return [sum(row) * self.weight for row in rows]


def process_item(item):
    """The per-item step of the guide's "Incremental Processing" example."""
    return (item, item * item)
