"""LPIPS as a squared Euclidean distance between per-image embeddings.

With channel-unit-normalised features f_l (H_l x W_l maps) and non-negative linear weights w_l,
LPIPS(x, y) = sum_l || e_l(x) - e_l(y) ||^2 with e_l = sqrt(w_l) * f_l / sqrt(H_l W_l). One forward
pass per image then replaces one forward pass per *pair*, and distances become Gram algebra.
Gram products are taken in float64 (fp32 expansion loses digits for near-identical images).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.metrics.images import quantize as quantize_8bit

# Side the LPIPS input is resized to, per backbone: the reference resizes to 256 for VGG.
DEFAULT_INPUT_SIZE: dict[str, int | None] = {"vgg": 256, "alex": 256, "toy": None}
_CHUNK_BYTES = 64 * 2**20  # float64 working set of one Gram chunk


def resize_for_lpips(x: torch.Tensor, size: int | None, quantize: bool = True) -> torch.Tensor:
    """Resize [-1, 1] images to `size` x `size` (bilinear, antialiased, as PIL's resize used by
    the reference); re-quantise to 8 bits when `quantize`, as the reference's PIL images are."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return quantize_8bit(out) if quantize else out


def resolve_lpips_net(net, weights_dir: str | os.PathLike | None = None):
    """A backbone name ('vgg', 'alex', 'toy') -> network; networks are returned unchanged."""
    if isinstance(net, str):
        if net == "toy":
            from adaptscope.metrics.toynet import load_toynet

            return load_toynet()
        from adaptscope.metrics.backbones import build_lpips

        return build_lpips(net, weights_dir)
    return net


def backbone_name(net) -> str:
    """'vgg' / 'alex' for lpips models, 'toy' for anything else with `lpips_features`."""
    if hasattr(net, "pnet_type"):
        return "vgg" if net.pnet_type in ("vgg", "vgg16") else net.pnet_type
    return "toy"


class LPIPSEmbedder:
    """Per-image LPIPS embeddings of an `lpips.LPIPS` model or a net with `lpips_features`
    and `lpips_weights` (the toy net)."""

    def __init__(self, net: nn.Module, input_size: int | None | str = "default",
                 quantize: bool = True):
        self.net = net
        self.name = backbone_name(net)
        if input_size == "default":
            input_size = DEFAULT_INPUT_SIZE.get(self.name)
        self.input_size = input_size
        self.quantize = quantize
        params = list(net.parameters()) if hasattr(net, "parameters") else []
        self.device = params[0].device if params else torch.device("cpu")
        self._scales = [s.to(self.device) for s in self._layer_scales()]

    def _layer_scales(self) -> list[torch.Tensor]:
        """sqrt(w_l) per layer (C_l,)."""
        if hasattr(self.net, "scaling_layer"):  # lpips.LPIPS
            if getattr(self.net, "spatial", False):
                raise ValueError("spatial LPIPS models are not supported; use spatial=False")
            if self.net.lpips:
                weights = [lin.model[-1].weight.detach().reshape(-1) for lin in self.net.lins]
            else:
                weights = [torch.ones(c) for c in self.net.chns]
        else:
            weights = [torch.as_tensor(w).detach().reshape(-1) for w in self.net.lpips_weights]
        for i, w in enumerate(weights):
            if (w < 0).any():
                raise ValueError(
                    f"LPIPS layer {i} has negative linear weights; the embedding identity "
                    "needs non-negative weights"
                )
        return [w.float().sqrt() for w in weights]

    def _raw_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self.net, "scaling_layer"):
            if self.net.version == "0.1":
                x = self.net.scaling_layer(x)
            return list(self.net.net.forward(x))
        return list(self.net.lpips_features(x))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network input (8-bit quantised, resized)."""
        if self.quantize:
            x = quantize_8bit(x)
        return resize_for_lpips(x.float(), self.input_size, self.quantize)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer embeddings (N, C_l * H_l * W_l), float32, on the network's device."""
        if getattr(self.net, "training", False):
            raise ValueError("the LPIPS network must be in eval mode (call .eval())")
        feats = self._raw_features(self.prepare(x).to(self.device))
        out = []
        for f, s in zip(feats, self._scales, strict=True):
            # lpips.normalize_tensor (unit length over channels, eps 1e-10), then
            # sqrt(w_c) / sqrt(H W); in place on the network's own output.
            f = f.float()
            norm = torch.linalg.vector_norm(f, dim=1, keepdim=True).add_(1e-10)
            scale = (s / (f.shape[-2] * f.shape[-1]) ** 0.5).view(1, -1, 1, 1)
            out.append(f.div_(norm).mul_(scale).flatten(1))
        return out


def _chunk_cols(rows: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * max(rows, 1)))


def to_float64(emb: list[torch.Tensor]) -> list[torch.Tensor]:
    """Embeddings held in float64 (for the few images every batch is compared with)."""
    return [layer.double() for layer in emb]


def sq_norms(emb: list[torch.Tensor]) -> torch.Tensor:
    """||e(x)||^2 per image, float64 (N,)."""
    total = torch.zeros(emb[0].shape[0], dtype=torch.float64, device=emb[0].device)
    for layer in emb:
        step = _chunk_cols(layer.shape[0])
        for j in range(0, layer.shape[1], step):
            total += torch.linalg.vector_norm(layer[:, j:j + step].double(), dim=1).square()
    return total


def cross_distances(a: list[torch.Tensor], b: list[torch.Tensor],
                    b_norms: torch.Tensor | None = None) -> torch.Tensor:
    """LPIPS between every a_i and b_j (Na, Nb), float64. Each column chunk of `a` is
    converted to float64 once and serves both its norms and the Gram block; `b` is best
    given in float64 already (`to_float64`) when it is reused."""
    nb = sq_norms(b) if b_norms is None else b_norms
    na = torch.zeros(a[0].shape[0], dtype=torch.float64, device=a[0].device)
    g = torch.zeros(a[0].shape[0], b[0].shape[0], dtype=torch.float64, device=a[0].device)
    for la, lb in zip(a, b, strict=True):
        step = _chunk_cols(la.shape[0] + lb.shape[0])
        for j in range(0, la.shape[1], step):
            ad = la[:, j:j + step].double()
            na += torch.linalg.vector_norm(ad, dim=1).square()
            g.addmm_(ad, lb[:, j:j + step].double().T)
    return (na[:, None] + nb[None, :] - 2.0 * g).clamp_min_(0.0)


def pairwise_distances(emb: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS between all images of one set (N, N), float64, zero diagonal."""
    n = emb[0].shape[0]
    g = torch.zeros(n, n, dtype=torch.float64, device=emb[0].device)
    for layer in emb:
        step = _chunk_cols(2 * n)
        for j in range(0, layer.shape[1], step):
            xd = layer[:, j:j + step].double()
            g.addmm_(xd, xd.T)
    diag = g.diagonal().clone()
    d = (diag[:, None] + diag[None, :] - 2.0 * g).clamp_min_(0.0)
    d.fill_diagonal_(0.0)
    return d
