"""TGAN: plain fine-tuning of every generator and discriminator parameter."""

from adaptscope.methods.base import Method


class TGAN(Method):
    name = "tgan"
    summary = "Fine-tune all of G and D with the shared loop (Wang et al., 2018)."
