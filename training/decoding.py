"""Decode one stored image, whatever it is, to the uint8 pixels fgssl trains on: RGB, shorter side resized to S,
centre S x S crop (training.data caches the result; training.processor's saved image processor repeats these steps).

    decode_image(value, size)   an `Image(decode=False)` value, a path, bytes or a PIL image -> uint8 3 x S x S

Any PIL mode becomes 8-bit RGB (transparency on white, 16-bit and float greys rescaled), the EXIF orientation is
applied, and big images are reduced by whole factors first, strip by strip, so memory stays bounded.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image

#: Part of the decode cache key: datasets hashes `_decode_batch` but not the helpers it calls, so bump this
#: whenever `decode_image` (or a helper) changes its output, or stale cached pixels would be reused.
DECODE_VERSION = 2
#: Decoding first shrinks a big image by whole factors (box filter, `Image.reduce`) while it stays at least
#: REDUCE_GAP x the output size, before colour conversion and orientation, so those work on a small image; the
#: final bicubic resize is then what `resize(reducing_gap=REDUCE_GAP)` does internally on the full image.
REDUCE_GAP = 3
#: Pixels of the full-size image converted and reduced at a time: the reduction's own memory stays small.
REDUCE_STRIP_PIXELS = 1 << 22
#: Modes `Image.reduce` accepts (the others are converted strip by strip first).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent pixels are composited on white (their stored colour is arbitrary, often black);
    16-bit and 32-bit integer / float grey images are rescaled to 0..255 instead of being clipped.
    """
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        elif arr.max(initial=0.0) > 255.0:
            arr = arr / 257.0  # 16-bit range 0..65535 -> 0..255
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


#: EXIF orientation -> the transposition that shows the image upright (as `ImageOps.exif_transpose`).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size after resizing the shorter side to `size`; the longer side is truncated to an integer like transformers'
    shortest-edge resize, so the saved image processor (training.processor) reproduces these pixels."""
    scale = size / min(width, height)
    return max(size, int(width * scale)), max(size, int(height * scale))


def _transpose_box(box, size: tuple[int, int], method) -> tuple[float, float, float, float]:
    """Where the region `box` of an image of `size` lands after `img.transpose(method)`."""
    width, height = size
    x0, y0, x1, y1 = box
    T = Image.Transpose
    corners = {
        T.FLIP_LEFT_RIGHT: lambda x, y: (width - x, y),
        T.FLIP_TOP_BOTTOM: lambda x, y: (x, height - y),
        T.ROTATE_180: lambda x, y: (width - x, height - y),
        T.ROTATE_90: lambda x, y: (y, width - x),
        T.ROTATE_270: lambda x, y: (height - y, x),
        T.TRANSPOSE: lambda x, y: (y, x),
        T.TRANSVERSE: lambda x, y: (height - y, width - x),
    }[method]
    (ax, ay), (bx, by) = corners(x0, y0), corners(x1, y1)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def _reducible(img: Image.Image) -> Image.Image:
    """`img` in a mode `Image.reduce` accepts, keeping what `_to_rgb` uses (transparency, 16-bit range)."""
    if img.mode in _REDUCIBLE_MODES:
        return img
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "PA":
        return img.convert("RGBA")
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img.convert("RGB")


def _reduce_in_strips(img: Image.Image, factor: tuple[int, int]) -> Image.Image:
    """`img.reduce(factor)` (box filter; transparent pixels averaged premultiplied), one strip of rows at a time.

    Each strip is cropped, brought to a reducible mode and reduced on its own, so the extra memory is one strip
    whatever the mode, never a full-size copy.
    """
    fx, fy = factor
    width, height = img.size
    rows = max(1, REDUCE_STRIP_PIXELS // (width * fy)) * fy  # whole bands of fy rows
    reduced = None
    for top in range(0, height, rows):
        strip = _reducible(img.crop((0, top, width, min(top + rows, height)))).reduce((fx, fy))
        if reduced is None:
            reduced = Image.new(strip.mode, (-(-width // fx), -(-height // fy)))
        reduced.paste(strip, (0, top // fy))
    return reduced


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (antialiased bicubic), then take the centre size x size crop."""
    return _fit(img, size, img.size, None)


def _fit(img: Image.Image, size: int, full_size: tuple[int, int], box) -> Image.Image:
    """Resize the region `box` of `img` (a full image of `full_size` pixels, maybe reduced) to the output size of
    `full_size`, then take the centre size x size crop."""
    new_w, new_h = _output_size(*full_size, size)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, box=box, reducing_gap=REDUCE_GAP)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _open(value, draft_side: int) -> Image.Image:
    """The PIL image of `value`, loaded; a JPEG decoded at 1/2 - 1/8 scale when that still covers draft_side^2."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = value["bytes"] if value.get("bytes") is not None else value["path"]
    img = Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)
    # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers size x size (much faster).
    img.draft(None, (draft_side, draft_side))
    img.load()  # truncated / corrupt data raises here, not later
    return img


def _upright_resized(img: Image.Image, output_size) -> tuple[Image.Image, tuple[float, float, float, float] | None,
                                                               tuple[int, int]]:
    """(the image reduced, RGB and upright; the box of it to resize from; the upright output size).

    `output_size(upright_w, upright_h) -> (out_w, out_h)` sizes the final resize from the upright image's size.
    """
    # Camera orientation (EXIF, or XMP through getexif), applied below to the reduced image.
    method = _ORIENTATIONS.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    width, height = img.size
    swaps = method in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                       Image.Transpose.ROTATE_270)
    upright = (height, width) if swaps else (width, height)
    out_w, out_h = output_size(*upright)
    target = (out_h, out_w) if swaps else (out_w, out_h)  # the output size in the stored (not upright) frame
    factor = (max(1, int(width / target[0] / REDUCE_GAP)), max(1, int(height / target[1] / REDUCE_GAP)))
    box = None
    if factor != (1, 1):
        img = _reduce_in_strips(img, factor)
        box = (0.0, 0.0, width / factor[0], height / factor[1])  # the last row / column of cells may be partial
    img = _to_rgb(img)
    if method is not None:
        if box is not None:
            box = _transpose_box(box, img.size, method)
        img = img.transpose(method)
    return img, box, upright


def decode_image(value, size: int) -> np.ndarray:
    """Decode one stored image to a uint8 array 3 x size x size (RGB, shorter side resized, centre-cropped).

    `value` is what an `Image(decode=False)` column holds ({"bytes", "path"}), a path, raw bytes, or a
    PIL image. Raises whatever PIL raises for a corrupt or unreadable file.

    Memory stays bounded for any image under Pillow's size limit: JPEGs are decoded at 1/2 - 1/8 scale when that
    still covers the output (draft mode), and any other big image is reduced by whole factors right after decoding,
    strip by strip, before colour conversion and EXIF rotation, which then work on the small image. The peak is
    about one decoded image (under 1 GB for a 179-megapixel RGBA PNG, the largest Pillow opens) instead of the
    four or five full-size copies of a conversion chain. The reduction is the one `resize(reducing_gap=3)` makes
    internally, and the final resize reads the exact region of the original, so the pixels barely change.
    """
    img = _open(value, size)
    img, box, upright = _upright_resized(img, lambda w, h: _output_size(w, h, size))
    arr = np.asarray(_fit(img, size, upright, box), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def boxed_output_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size of a `width` x `height` image inside a `side` x `side` box at its aspect ratio: the longer side
    becomes `side`, or stays as it is when the image is smaller (never upsampled); the shorter side is scaled
    with it and rounded (at least 1 pixel)."""
    longer = max(width, height)
    if longer <= side:
        return int(width), int(height)
    scale = side / longer
    return max(1, min(side, round(width * scale))), max(1, min(side, round(height * scale)))


def decode_image_boxed(value, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one stored image WHOLE, at its aspect ratio, into a fixed uint8 3 x side x side box: the cache with
    room of `--cache_size_factor` > 1 (side = factor x S).

    The image is resized (antialiased bicubic, the same reduction as `decode_image`) so that its longer side is
    `side`, or kept at its own size when smaller (never upsampled), and placed at the top-left. The rest of the
    box repeats the last valid row / column (edge padding), so bilinear sampling at the valid region's border reads
    the border pixel as it would on the image itself. Returns (pixels 3 x side x side, (height, width) of the valid
    region).
    """
    if isinstance(value, Image.Image):
        full_w, full_h = value.size
        img = value
    else:
        # The draft must keep the shorter output side (then the longer one is covered too): open without loading
        # first to read the stored size (a JPEG's header), then draft and load.
        if isinstance(value, dict):
            value = value["bytes"] if value.get("bytes") is not None else value["path"]
        img = Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)
        full_w, full_h = img.size
        out_w, out_h = boxed_output_size(full_w, full_h, side)
        shorter = min(out_w, out_h) + 1  # +1: the draft's rounded-up sides still cover the output exactly
        img.draft(None, (shorter, shorter))
        img.load()
    del full_w, full_h
    img, box, upright = _upright_resized(img, lambda w, h: boxed_output_size(w, h, side))
    out_w, out_h = boxed_output_size(*upright, side)
    if (out_w, out_h) != img.size or box is not None:
        img = img.resize((out_w, out_h), Image.Resampling.BICUBIC, box=box, reducing_gap=REDUCE_GAP)
    arr = np.asarray(img, dtype=np.uint8)  # out_h x out_w x 3
    arr = np.pad(arr, ((0, side - out_h), (0, side - out_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), (out_h, out_w)


__all__ = ["DECODE_VERSION", "boxed_output_size", "decode_image", "decode_image_boxed"]
