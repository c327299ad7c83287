"""ZCA whitening of images, fitted on (normalised) training images.

With ``X`` the (N, D) flattened images (D = C*H*W), ``mu`` their mean, and the
eigendecomposition ``cov = (X - mu)^T (X - mu) / N = U diag(S) U^T``:

    W     = U diag(1 / sqrt(S + eps)) U^T       # whitening matrix, (D, D), symmetric
    W^-1  = U diag(sqrt(S + eps)) U^T           # its inverse, (D, D)
    transform(x) = (x - mu) @ W,   inverse_transform(z) = z @ W^-1 + mu

``eps`` regularises the small eigenvalues (0.1 is the common choice in the dataset
distillation literature, on images normalised per channel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from datadistill.errors import ConfigError, DataError

DEFAULT_EPS = 0.1  # the regulariser of load_dataset(zca=True) and of artefacts without one

_CHUNK = 4096  # rows per block when accumulating the covariance
_FLOAT64_MATMUL_MAX_DIM = 1024  # above this D, block products run in float32 (2x faster)


def symmetric(m: Tensor) -> Tensor:
    """``m`` made exactly symmetric (a product ``A @ A.T`` may differ in the last bit)."""
    return (m + m.T) / 2


def _upper(d: int, device: torch.device) -> Tensor:
    """The (d, d) mask of the upper triangle; row-major selection reads it row by row."""
    return torch.ones(d, d, dtype=torch.bool, device=device).triu()


def pack_symmetric(m: Tensor) -> Tensor:
    """The upper triangle of a symmetric (D, D) matrix, row by row: D (D + 1) / 2 values."""
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"pack_symmetric takes a square matrix; got shape {tuple(m.shape)}.")
    return m[_upper(m.shape[0], m.device)]


def unpack_symmetric(v: Tensor, d: int) -> Tensor:
    """Inverse of :func:`pack_symmetric`: the (d, d) symmetric matrix."""
    if v.dim() != 1 or v.numel() != d * (d + 1) // 2:
        raise DataError(
            f"A packed symmetric {d} x {d} matrix has {d * (d + 1) // 2} values; "
            f"got shape {tuple(v.shape)}."
        )
    mask = _upper(d, v.device)
    m = v.new_zeros(d, d)
    m[mask] = v
    return torch.where(mask, m, m.T)  # the lower triangle mirrors the upper, exactly


class ZCA:
    """A fitted ZCA whitening; ``transform`` / ``inverse_transform`` keep the (N, C, H, W) shape."""

    def __init__(self, matrix: Tensor | None, inverse: Tensor, mean: Tensor, eps: float) -> None:
        d = mean.numel()
        shape = None if matrix is None else tuple(matrix.shape)
        if mean.dim() != 1 or shape not in (None, (d, d)) or inverse.shape != (d, d):
            raise DataError(
                f"ZCA tensors have inconsistent shapes (matrix {shape}, "
                f"inverse {tuple(inverse.shape)}, mean {tuple(mean.shape)}); "
                "they must be (D, D) (or no matrix: computed from the inverse), (D, D) and "
                "(D,)."
            )
        self._matrix = matrix  # (D, D), or None: computed from the inverse when first used
        self._source: ZCA | None = None  # the ZCA this is a device copy of (see ``to``)
        self.inverse = inverse  # (D, D)
        self.mean = mean  # (D,)
        self.eps = float(eps)

    @property
    def matrix(self) -> Tensor:
        """The whitening matrix W, (D, D). An artefact stores the inverse only (one
        triangle of it: D*D floats are most of a whitened CIFAR set's file); W shares its
        eigenvectors, with the reciprocal eigenvalues, and is computed once, when first
        needed: by the ZCA a device copy was made from, so that copies share one
        eigendecomposition. It is an ordinary tensor even when first needed under
        ``torch.inference_mode`` (an inference tensor could not be used with autograd later)."""
        if self._matrix is None:
            with torch.inference_mode(False), torch.no_grad():
                if self._source is not None:
                    w = self._source.matrix.to(self.inverse.device)
                else:
                    r, u = torch.linalg.eigh(self.inverse.to(torch.float64))  # sqrt(S + eps)
                    w = (u * r.clamp_min(torch.finfo(torch.float64).tiny).reciprocal()) @ u.T
                self._matrix = w.to(self.inverse.dtype)
                self._source = None
        return self._matrix

    @property
    def dim(self) -> int:
        """D = C*H*W, the flattened image size."""
        return self.mean.numel()

    @classmethod
    def fit(cls, x: Tensor, eps: float = DEFAULT_EPS) -> ZCA:
        """Fit on images ``x`` (N, C, H, W).

        The covariance is summed and eigendecomposed in float64 (block products run in
        float32 for large D); the stored tensors are float32 on ``x``'s device.
        """
        if not eps > 0:
            raise ConfigError(f"The ZCA eps must be a float > 0. Got {eps!r} instead.")
        if x.dim() != 4 or x.shape[0] < 1:
            raise ConfigError(
                f"ZCA.fit needs a non-empty (N, C, H, W) tensor. Got shape {tuple(x.shape)}."
            )
        flat = x.reshape(x.shape[0], -1)  # (N, D)
        n, d = flat.shape
        mean = flat.sum(0, dtype=torch.float64) / n  # (D,)
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        prod_dtype = torch.float64 if d <= _FLOAT64_MATMUL_MAX_DIM else torch.float32
        for start in range(0, n, _CHUNK):
            block = (flat[start : start + _CHUNK].to(torch.float64) - mean).to(prod_dtype)
            cov += (block.T @ block).to(torch.float64)  # (D, D), summed in float64
        cov /= n
        s, u = torch.linalg.eigh(cov)  # ascending S (D,), U (D, D)
        s = s.clamp_min(0.0) + eps
        matrix = symmetric((u * s.rsqrt()) @ u.T)  # exactly: an artefact keeps one triangle
        inverse = symmetric((u * s.sqrt()) @ u.T)
        f32 = torch.float32
        return cls(matrix.to(f32), inverse.to(f32), mean.to(f32), eps)

    def _apply(self, x: Tensor, m: Tensor, before: Tensor | None, after: Tensor | None) -> Tensor:
        if x.dim() != 4 or math.prod(x.shape[1:]) != self.dim:  # also for an empty split
            raise ConfigError(
                f"ZCA expects (N, C, H, W) images with C*H*W = {self.dim}. "
                f"Got shape {tuple(x.shape)}."
            )
        flat = x.reshape(x.shape[0], self.dim)  # (N, D); N may be 0
        if before is not None:
            flat = flat - before.to(x.device, x.dtype)
        out = flat @ m.to(x.device, x.dtype)
        if after is not None:
            out = out + after.to(x.device, x.dtype)
        return out.reshape(x.shape)

    def transform(self, x: Tensor) -> Tensor:
        """Whiten images: (N, C, H, W) -> (N, C, H, W)."""
        return self._apply(x, self.matrix, self.mean, None)

    def inverse_transform(self, x: Tensor) -> Tensor:
        """Undo :meth:`transform`: (N, C, H, W) -> (N, C, H, W)."""
        return self._apply(x, self.inverse, None, self.mean)

    def to(self, device: torch.device | str) -> ZCA:
        """A copy with its tensors on ``device``; a whitening matrix not computed yet is
        computed once, by this ZCA, when either needs it."""
        matrix = None if self._matrix is None else self._matrix.to(device)
        copy = ZCA(matrix, self.inverse.to(device), self.mean.to(device), self.eps)
        if matrix is None:
            copy._source = self
        return copy

    def state_dict(self) -> dict[str, Tensor]:
        """All three tensors: matrix (computed from the inverse if it was not given),
        inverse, mean. An artefact keeps less (the inverse's triangle and the mean)."""
        return {"matrix": self.matrix, "inverse": self.inverse, "mean": self.mean}

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor], eps: float) -> ZCA:
        """Inverse of :meth:`state_dict`; without ``matrix`` it is computed from the
        inverse when first used."""
        missing = [k for k in ("inverse", "mean") if k not in d]
        if missing:
            raise DataError(
                f"The ZCA state is missing {', '.join(missing)}; "
                "save it with ZCA.state_dict() and load the whole dict."
            )
        return cls(d.get("matrix"), d["inverse"], d["mean"], eps)

    def __repr__(self) -> str:
        return f"ZCA(dim={self.dim}, eps={self.eps})"
