"""LPIPS as a squared Euclidean distance between per-image embeddings.

With channel-unit-normalised features f_l (H_l x W_l maps) and non-negative linear weights w_l,
LPIPS(x, y) = sum_l || e_l(x) - e_l(y) ||^2 with e_l = sqrt(w_l) * f_l / sqrt(H_l W_l). One forward
pass per image then replaces one forward pass per *pair*, and distances become Gram algebra.
Gram products are taken in float64 (fp32 expansion loses digits for near-identical images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptscope.images import quantize as quantize_8bit

_CHUNK_BYTES = 64 * 2**20  # float64 working set of one Gram chunk


def resize_for_lpips(x: torch.Tensor, size: int | None, quantize: bool = True) -> torch.Tensor:
    """Resize [-1, 1] images to `size` x `size` (bilinear, antialiased, as PIL's resize used by
    the reference); re-quantise to 8 bits when `quantize`, as the reference's PIL images are."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return quantize_8bit(out) if quantize else out


class LPIPSNet(nn.Module):
    """What intra-cluster LPIPS needs of a network: raw per-layer features of [-1, 1] images
    and non-negative per-channel weights. `lpips.LPIPS` models are adapted by `as_lpips_net`;
    other backbones (the embedded world's toy net) subclass this."""

    backbone_name: str = "custom"
    default_input_size: int | None = None  # side inputs are resized to; None: as given
    lpips_weights: list[torch.Tensor]  # one non-negative (C_l,) weight tensor per layer

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover
        """Raw (unnormalised) (N, C_l, H_l, W_l) features of each layer."""
        raise NotImplementedError


class PackageLPIPS(LPIPSNet):
    """An `lpips.LPIPS` model (VGG or AlexNet trunk, v0.1 linear heads) as an `LPIPSNet`."""

    default_input_size = 256  # the reference resizes to 256 before VGG / AlexNet

    def __init__(self, model: nn.Module):
        super().__init__()
        if getattr(model, "spatial", False):
            raise ValueError("spatial LPIPS models are not supported; use spatial=False")
        self.model = model
        self.backbone_name = "vgg" if model.pnet_type in ("vgg", "vgg16") else model.pnet_type
        self.train(model.training)

    @property
    def lpips_weights(self) -> list[torch.Tensor]:
        if self.model.lpips:
            return [lin.model[-1].weight.detach().reshape(-1) for lin in self.model.lins]
        return [torch.ones(c) for c in self.model.chns]

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.model.version == "0.1":
            x = self.model.scaling_layer(x)
        return list(self.model.net.forward(x))


def as_lpips_net(net: nn.Module) -> LPIPSNet:
    """`net` itself when it is an `LPIPSNet`, an `lpips.LPIPS` model wrapped as one."""
    if isinstance(net, LPIPSNet):
        return net
    import lpips

    if isinstance(net, lpips.LPIPS):
        return PackageLPIPS(net)
    raise TypeError(f"{type(net).__name__} is neither an lpips.LPIPS model nor an LPIPSNet")


class LPIPSEmbedder:
    """Per-image LPIPS embeddings of an `LPIPSNet` (or an `lpips.LPIPS` model)."""

    def __init__(self, net: nn.Module, input_size: int | None | str = "default",
                 quantize: bool = True):
        self.net = as_lpips_net(net)
        self.name = self.net.backbone_name
        if input_size == "default":
            input_size = self.net.default_input_size
        self.input_size = input_size
        self.quantize = quantize
        params = list(self.net.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self._scales = [s.to(self.device) for s in self._layer_scales()]

    def _layer_scales(self) -> list[torch.Tensor]:
        """sqrt(w_l) per layer (C_l,)."""
        weights = [torch.as_tensor(w).detach().reshape(-1) for w in self.net.lpips_weights]
        for i, w in enumerate(weights):
            if (w < 0).any():
                raise ValueError(
                    f"LPIPS layer {i} has negative linear weights; the embedding identity "
                    "needs non-negative weights"
                )
        return [w.float().sqrt() for w in weights]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network input (8-bit quantised, resized)."""
        if self.quantize:
            x = quantize_8bit(x)
        return resize_for_lpips(x.float(), self.input_size, self.quantize)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer embeddings (N, C_l * H_l * W_l), float32, on the network's device."""
        if self.net.training:
            raise ValueError("the LPIPS network must be in eval mode (call .eval())")
        feats = self.net.lpips_features(self.prepare(x).to(self.device))
        out = []
        for f, s in zip(feats, self._scales, strict=True):
            # lpips.normalize_tensor (unit length over channels, eps 1e-10), then
            # sqrt(w_c) / sqrt(H W); in place on the network's own output.
            f = f.float()
            norm = torch.linalg.vector_norm(f, dim=1, keepdim=True).add_(1e-10)
            scale = (s / (f.shape[-2] * f.shape[-1]) ** 0.5).view(1, -1, 1, 1)
            out.append(f.div_(norm).mul_(scale).flatten(1))
        return out


def lpips_pair_distances(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         input_size: int | None | str = "default") -> torch.Tensor:
    """LPIPS(x_i, y_i) of paired [-1, 1] images (N,), differentiable, for perceptual losses.

    The embedding of `LPIPSEmbedder.embed` without its 8-bit quantisation (which has no
    gradient): channel-unit-normalised features times sqrt(w_c) / sqrt(H W), squared distance.
    Computed on the network's device, returned on `x`'s.
    """
    emb = LPIPSEmbedder(net, input_size, quantize=False)
    pair = []
    for img in (x, y):
        feats = emb.net.lpips_features(emb.prepare(img).to(emb.device))
        pair.append([
            f.float() / (torch.linalg.vector_norm(f.float(), dim=1, keepdim=True) + 1e-10)
            * (s / (f.shape[-2] * f.shape[-1]) ** 0.5).view(1, -1, 1, 1)
            for f, s in zip(feats, emb._scales, strict=True)])
    dist = sum((a - b).square().flatten(1).sum(1) for a, b in zip(*pair, strict=True))
    return dist.to(x.device)


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
