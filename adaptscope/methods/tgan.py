"""TGAN: plain fine-tuning of every generator and discriminator parameter, and TGAN+ADA."""

from adaptscope.methods.base import Method


class TGAN(Method):
    name = "tgan"
    summary = "Fine-tune all of G and D with the shared loop (Wang et al., 2018)."


class TGANADA(TGAN):
    """TGAN with ADA's adaptive augmentation (Karras et al., 2020), a curve of the paper.

    The augmentation is the loop's (`train.augment = "ada"`, any method can switch it on), with
    the experiment's `train.ada_*` settings; this entry only fixes it on.
    """

    name = "tgan_ada"
    summary = "TGAN with ADA's adaptive non-leaking augmentation of D's inputs (Karras 2020)."
    loop_settings = {"augment": "ada"}
