"""FreezeD: fine-tuning with the high-resolution discriminator blocks frozen."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from adaptscope.errors import ConfigError
from adaptscope.methods.base import Method, check_setting, hp


class FreezeD(Method):
    name = "freezed"
    summary = "Freeze D's high-resolution blocks, train its last blocks (Mo et al., 2020)."

    @dataclass
    class Params:
        trainable_blocks: int = hp(
            2,
            "[S] Trailing discriminator ResBlocks that train, with final_conv and final_linear. "
            "By analogy with the StyleGAN-v1 original, which trains the blocks at 16x16 "
            "and below: on the reference 256 px D that is convs.5 and convs.6.",
        )

        def __post_init__(self) -> None:
            check_setting(self.trainable_blocks >= 0, "freezed.trainable_blocks",
                          self.trainable_blocks, "0 or more")

    def build(self) -> None:
        """Check `trainable_blocks` against the discriminator's block count."""
        n_blocks = len(self.ctx.d.convs) - 1  # convs.0 is the 1x1 fromRGB layer
        k = self.params.trainable_blocks
        if not 0 <= k <= n_blocks:
            raise ConfigError(f"freezed.trainable_blocks = {k} is not allowed: this "
                              f"discriminator has {n_blocks} blocks, so 0..{n_blocks}")

    def trainable_d_parameters(self) -> Iterator[nn.Parameter]:
        d = self.ctx.d
        k = self.params.trainable_blocks
        for block in list(d.convs)[len(d.convs) - k:]:
            yield from block.parameters()
        yield from d.final_conv.parameters()
        yield from d.final_linear.parameters()
