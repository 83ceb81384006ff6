"""Decoding big images: bounded memory (reduced before any full-size copy), same pixels as a full-size decode."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from fgssl.training.decoding import decode_image


def smooth_image(width, height, mode="RGB", seed=0):
    """A photo-like image (smooth colour blobs) in any mode."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 4), dtype=np.uint8)
    return Image.fromarray(cells, "RGBA").resize((width, height), Image.Resampling.BICUBIC).convert(mode)


def full_size_reference(data: bytes, size: int) -> np.ndarray:
    """The straightforward decode (orientation, RGB on white, bicubic with reducing_gap, centre crop), at full size."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode != "RGB":
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    scale = size / min(img.size)
    new = (max(size, int(img.width * scale)), max(size, int(img.height * scale)))
    img = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


@pytest.mark.parametrize("mode, orientation", [("RGBA", 1), ("RGBA", 6), ("RGB", 3), ("P", 8), ("LA", 1)])
def test_reduced_decode_matches_the_full_size_decode(mode, orientation):
    image = smooth_image(1700, 1300, mode, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    data = buffer.getvalue()
    ours = decode_image(data, 40).astype(int)
    assert ours.shape == (3, 40, 40)
    # Averaging transparent pixels premultiplied before compositing, not after, moves a value by 1-2 at most.
    assert np.abs(ours - full_size_reference(data, 40).astype(int)).max() <= 2


MEASURE = """
import sys
from fgssl.training.decoding import decode_image

def status(field):  # kB, from the kernel's accounting of this process
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], 'rb').read()
open('/proc/self/clear_refs', 'w').write('5')  # the peak (VmHWM) starts again from the current size
before = status('VmRSS')
out = decode_image(data, 64)
assert out.shape == (3, 64, 64)
print(status('VmHWM') - before)
"""


@pytest.mark.parametrize("mode, bytes_per_pixel", [("RGBA", 4), ("P", 1)])
def test_big_image_decodes_in_about_one_decoded_copy(tmp_path, mode, bytes_per_pixel):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("measuring a peak needs Linux's /proc/self/clear_refs")
    # 24 megapixels, quick to write (flat colours compress fast). Decoding it the straightforward way (orientation
    # copy, RGBA conversion, white background, compositing, RGB) peaks at 4-5 decoded copies.
    width, height = 6000, 4000
    image = Image.new("RGBA", (width, height), (30, 120, 200, 160))
    ImageDraw.Draw(image).ellipse((500, 300, 5000, 3500), fill=(250, 20, 20, 90))
    if mode == "P":
        image = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
    path = tmp_path / "big.png"
    image.save(path, compress_level=1)
    del image
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    extra = int(result.stdout.strip().splitlines()[-1])
    decoded = width * height * bytes_per_pixel
    message = f"decode took {extra / 2**20:.0f} MB for a {decoded / 2**20:.0f} MB image"
    assert extra < 1.5 * decoded + 32 * 2**20, message
