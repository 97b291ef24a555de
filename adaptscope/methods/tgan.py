"""TGAN: plain fine-tuning of every generator and discriminator parameter."""

from adaptscope.methods.base import Method, register_method


@register_method("tgan")
class TGAN(Method):
    summary = "Fine-tune all of G and D with the shared loop (Wang et al., 2018)."
