"""The lens family: each lens maps the residual of layer L to float32 logits, behind one
interface (registry.Lens, after tuned-lens's nn/lenses.py).

    registry.py   the Lens interface, `@register`, KINDS, build_lenses, norm_for
    kinds.py      one class per kind: its name, summary, argument, norm rule, whether it is
                  the identity at the last layer, and any parameters of its own
    specs.py      how a `--lens` list is read (LensSpec, aliases, the reference lens)

Adding a lens is one class in kinds.py with `@register`: the CLI's --lens help and checks,
the sweep's settings hash, the manifest and the names a stored tuned lens may not take all
read KINDS. No torch at import (the CLI reads the registry); the tensor work is
lensdb/extract/lens.py's, imported when a lens first runs.

| kind       | written as        | what it applies before the unembedding                           |
| ---------- | ----------------- | ---------------------------------------------------------------- |
| `norm`     | `norm`            | the architecture-aware norm: the next block's input norm          |
| `final_ln` | `final_ln`        | the final norm at every layer (the classic logit lens)            |
| `raw`      | `raw`             | nothing                                                           |
| `tuned`    | `tuned:DIR`,      | a learned affine translator per layer (tuned-lens format), then   |
|            | `tuned:NAME`,     | the final norm; DIR is a folder with config.json and params.pt,  |
|            | `ALIAS=tuned:...` | NAME a lens stored in the warehouse (`lensdb train-lens --name`)  |
"""

from lensdb.lenses.registry import KINDS, Lens, build_lenses, lens_identities, norm_for, register
from lensdb.lenses.kinds import FinalNormLens, NormLens, RawLens, TunedLens
from lensdb.lenses.specs import (
    DEFAULT_LENSES,
    DEFAULT_REFERENCE,
    LensSpec,
    check_not_a_kind,
    lens_option_help,
    parse_lens_specs,
    reference_lens,
    written_as,
)

__all__ = [
    "DEFAULT_LENSES",
    "DEFAULT_REFERENCE",
    "KINDS",
    "FinalNormLens",
    "Lens",
    "LensSpec",
    "NormLens",
    "RawLens",
    "TunedLens",
    "build_lenses",
    "check_not_a_kind",
    "lens_identities",
    "lens_option_help",
    "norm_for",
    "parse_lens_specs",
    "reference_lens",
    "register",
    "written_as",
]
