"""`lensdb extract` under torchrun with one rank made to fail midway (tests/test_distributed.py).

    python -m torch.distributed.run --nproc-per-node 2 tests/distributed_driver.py extract MODEL ...

LENSDB_TEST_FAIL_RANK is the rank that fails after its first batch's records are on their
way to disk; LENSDB_TEST_FAIL_HOW is `raise` (an exception: the rank votes no) or `exit`
(os._exit: the rank dies without any cleanup and never votes).
"""

import os
import sys

from lensdb.cli import main
from lensdb.extract import pipeline

if int(os.environ["RANK"]) == int(os.environ["LENSDB_TEST_FAIL_RANK"]):
    real_lens_records = pipeline.lens_records

    def failing_lens_records(*args, **kwargs):
        real_lens_records(*args, **kwargs)
        if os.environ.get("LENSDB_TEST_FAIL_HOW") == "exit":
            os._exit(3)
        raise RuntimeError("rank failed on purpose")

    pipeline.lens_records = failing_lens_records

main(args=sys.argv[1:], prog_name="lensdb")
