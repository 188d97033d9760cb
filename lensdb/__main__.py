"""`python -m lensdb ...`, e.g. under torchrun: `torchrun --nproc-per-node 2 -m lensdb extract MODEL`."""

from lensdb.cli import main

if __name__ == "__main__":
    main(prog_name="lensdb")
