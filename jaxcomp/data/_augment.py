"""Image geometry on the host: the standard CIFAR augmentation, and zero-padding to a size.

``random_crop_flip`` is the augmentation of He et al. for CIFAR-10: "4 pixels are padded on each
side, and a 32x32 crop is randomly sampled from the padded image or its horizontal flip". Padding
is with zeros by default (``pad_mode="constant"``; ``"reflect"`` is the other common choice). It
runs on numpy batches between steps, vectorized with fancy indexing (no loop over examples), with
an explicit ``np.random.Generator``.

References:
  He, K., Zhang, X., Ren, S., Sun, J. "Deep Residual Learning for Image Recognition." 2015.
  arXiv:1512.03385.
"""

from __future__ import annotations

import numpy as np

from jaxcomp.data._dataset import Dataset

__all__ = [
    "pad_to",
    "random_crop_flip",
]

_PAD_MODES = ("constant", "reflect")


def random_crop_flip(
    x: np.ndarray, *, rng: np.random.Generator, pad: int = 4, pad_mode: str = "constant"
) -> np.ndarray:
    """Pads a batch of images, crops each back to its size at a random offset, flips half.

    For each image independently: pad ``pad`` pixels on every side of H and W, take the
    ``H x W`` window at a uniform offset in ``[0, 2 * pad]`` on each axis, and mirror it left to
    right with probability 1/2. Draws, in order: the row offsets, the column offsets, the flips.

    Args:
        x: images, ``(N, H, W, C)``.
        rng: the random generator; the same generator state gives the same result.
        pad: pixels of padding on each side, an int >= 0.
        pad_mode: ``"constant"`` (zeros) or ``"reflect"`` (mirror without the edge pixel; needs
            ``pad < H`` and ``pad < W``).

    Returns:
        The augmented images, same shape and dtype as ``x``.

    Raises:
        ValueError: if ``x`` is not 4-D, ``pad`` is negative, ``pad_mode`` unknown, or ``rng``
            not a ``np.random.Generator``.

    Examples:
        >>> import numpy as np
        >>> x = np.zeros((8, 32, 32, 3), np.float32)
        >>> random_crop_flip(x, rng=np.random.default_rng(0)).shape
        (8, 32, 32, 3)
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip: x must be (N, H, W, C), got shape {x.shape}")
    if isinstance(pad, bool) or not isinstance(pad, int | np.integer) or pad < 0:
        raise ValueError(f"random_crop_flip: pad must be an int >= 0, got {pad!r}")
    if pad_mode not in _PAD_MODES:
        raise ValueError(
            f"random_crop_flip: pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}"
        )
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"random_crop_flip: rng must be a np.random.Generator, got {type(rng).__name__}"
        )
    n, h, w, _ = x.shape
    if pad_mode == "reflect" and (pad >= h or pad >= w):
        raise ValueError(
            f"random_crop_flip: pad={pad} must be smaller than H={h} and W={w} for reflect padding"
        )
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=pad_mode)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    rows = dy[:, None] + np.arange(h)  # (N, H)
    cols = dx[:, None] + np.arange(w)  # (N, W)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_to(ds: Dataset, size: int) -> Dataset:
    """Zero-pads every image to ``size x size``, centred (e.g. 28x28 MNIST to 32x32 for VGG).

    Padding is split as evenly as possible, the odd pixel going after (bottom, right). Apply it
    before :func:`jaxcomp.data.normalize`, so the padding is the background value 0.

    Args:
        ds: a dataset of images, ``input_shape == (H, W, C)``.
        size: the target height and width, ``>= max(H, W)``.

    Returns:
        A new :class:`Dataset` with images of shape ``(size, size, C)``.

    Raises:
        ValueError: if the dataset does not hold images or ``size`` is smaller than them.
    """
    if len(ds.input_shape) != 3:
        raise ValueError(f"pad_to: ds must hold (H, W, C) images, got input_shape {ds.input_shape}")
    h, w, _ = ds.input_shape
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < max(h, w):
        raise ValueError(f"pad_to: size must be an int >= max(H, W) = {max(h, w)}, got {size!r}")
    top, left = (size - h) // 2, (size - w) // 2
    widths = ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0))
    return ds.replace(x_train=np.pad(ds.x_train, widths), x_test=np.pad(ds.x_test, widths))
