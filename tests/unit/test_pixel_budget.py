"""Decompression bombs where the gateway decodes pixels: the budget is checked from the header, before
decoding. The bomb is a real 9459x9459 PNG of about 340 KB (under Pillow's 89.5-megapixel limit and
dall-e-2's 4 MB, so `probe` accepts it): decoded and converted for Nova it took 4.3 s and 1.2 GB."""

from __future__ import annotations

import io
import time

import pytest
from helpers.images import png, zero_png
from PIL import Image

from imagegw.domain import ImageFile
from imagegw.images import DECODE_PIXEL_BUDGET, ImageTooLarge, open_within_budget, probe
from imagegw.upstream.bedrock import NovaRequest, convert_format
from imagegw.upstream.failures import UpstreamMalformed, UpstreamRejected
from imagegw.upstream.translation import fit_to

FAST_S = 0.5  # refusing from the header takes milliseconds; decoding the bomb takes seconds


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zero_png(9459, 9459)


def as_file(data: bytes, name: str = "image") -> ImageFile:
    info = probe(data)  # what validate did: the header passes
    return ImageFile(name, data, f"{name}.png", "image/png", info.format, info.width, info.height, info.mode)


def test_the_bomb_passes_the_header_checks_of_validation(bomb):
    assert len(bomb) < 400 * 1024
    assert probe(bomb).width * probe(bomb).height > DECODE_PIXEL_BUDGET


@pytest.mark.parametrize("operation", ["edits", "variations"])
def test_nova_refuses_an_input_over_the_pixel_budget_before_decoding(bomb, operation):
    params = {"prompt": "a hat", "n": 1} if operation == "edits" else {"n": 1}
    started = time.monotonic()
    with pytest.raises(UpstreamRejected) as info:
        NovaRequest(operation, params, [as_file(bomb)], None).bodies()
    assert time.monotonic() - started < FAST_S
    assert (info.value.status, info.value.code, info.value.param) == (400, "image_too_large", "image")
    assert f"{DECODE_PIXEL_BUDGET:,}" in info.value.message


def test_nova_refuses_a_mask_over_the_pixel_budget(bomb):
    image = as_file(png(64, 64))
    started = time.monotonic()
    with pytest.raises(UpstreamRejected) as info:
        NovaRequest("edits", {"prompt": "a hat"}, [image], as_file(bomb, "mask")).bodies()
    assert time.monotonic() - started < FAST_S
    assert (info.value.code, info.value.param) == ("image_too_large", "mask")


def test_resizing_and_converting_an_upstream_image_over_the_budget_is_refused(bomb):
    for work in (lambda: fit_to(bomb, (256, 256)), lambda: convert_format(bomb, "jpeg")):
        started = time.monotonic()
        with pytest.raises(UpstreamMalformed):
            work()
        assert time.monotonic() - started < FAST_S


def test_images_within_the_budget_are_still_decoded():
    data = png(512, 256)
    with open_within_budget(data) as img:
        img.load()
        assert img.size == (512, 256)
    with Image.open(io.BytesIO(fit_to(data, (128, 128)))) as img:
        assert img.size == (128, 128)
    with pytest.raises(ImageTooLarge):
        open_within_budget(data, budget=512 * 256 - 1)
