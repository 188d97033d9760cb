"""Model -> tensors -> records: the extraction engine.

`from lensdb.extract import extract` does not import torch until `extract` is called.
"""


def extract(model, config=None, **options):
    """Run a prompt set through `model` and commit one run (see `lensdb.extract.engine.extract`)."""
    from lensdb.extract.engine import extract as run

    return run(model, config, **options)
