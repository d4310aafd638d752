"""Peak memory of the worst cases, measured: each runs in a fresh Python process (the deployed package, as a
function would run it) and reports its peak resident set (VmHWM), which must stay under the memory
the template gives the API functions (ApiFunctionMemory, 1024 MB by default).

- 16 image_url images at the per-image maximum (49.5 MB each; 792 MB together), fetched over TLS from a
  local server: before the input budget this peaked at 1042 MB and Lambda killed the function. Now the
  request is refused once its images pass MaxRequestInputMB.
- 16 images that together just fit the budget: fetched, validated and encoded for the upstream.
- the largest multipart body Lambda can deliver (about 4.4 MB of image in a 6 MB event).
- the largest pixel count the gateway decodes (DECODE_PIXEL_BUDGET) through Nova's request builder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.images import png
from helpers.tls import LocalAuthority, ScriptedTlsServer, serve

from imagegw.request.image_urls import DEFAULT_REQUEST_INPUT_BYTES
from imagegw_dev.template import load_template

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)"
)
ROOT = Path(__file__).resolve().parents[2]
FUNCTION_MEMORY_MB = load_template(ROOT / "template.yaml")["Parameters"]["ApiFunctionMemory"]["Default"]
MB = 1024 * 1024
MAX_IMAGE = png(64, 64) + b"\0" * int(49.5 * MB)  # under gpt-image's 50 MB per image
FITTING_IMAGE = png(64, 64) + b"\0" * (DEFAULT_REQUEST_INPUT_BYTES // 16 - 64 * 1024)

PRELUDE = """
import json, ssl, sys
sys.path.insert(0, "tests")
from helpers.builders import json_request, multipart_request, file
from imagegw.request.catalog import Catalog
from imagegw.request.image_urls import FetchRules, fetch_https, resolve_image_urls
from imagegw.request.parsing import parse_request
from imagegw.request.validation import validate
from imagegw.errors import ApiError

CATALOG = Catalog.load()
args = json.loads(sys.argv[1])
rules = FetchRules(address_allowed=lambda a: a == "127.0.0.1",
                   tls_context=lambda: ssl.create_default_context(cafile=args["ca"]))
fetcher = lambda url, limit: fetch_https(url, limit, rules=rules)

def encode_for_upstream(request):
    from imagegw.upstream.providers import multipart_body
    body = multipart_body({"prompt": "x"}, request.images, request.mask)
    while body.read(1024 * 1024):
        pass

def report(outcome):
    # VmHWM: the peak resident set of this process's own memory since exec. ru_maxrss is not used: on
    # Linux a child started by fork/vfork + exec keeps the parent's peak (here, the whole pytest run's).
    with open("/proc/self/status") as status:
        hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"outcome": outcome, "peak_mb": hwm_kb / 1024}))
"""

FETCH = """
body = {"model": "gpt-image-1.5", "prompt": "x", "images": [{"image_url": args["url"]}] * 16}
try:
    raw = resolve_image_urls(parse_request("edits", json_request("edits", body)), fetcher, catalog=CATALOG)
    encode_for_upstream(validate(raw, CATALOG))
    report("accepted")
except ApiError as exc:
    report(f"{exc.status} {exc.code} {exc.param}")
"""

MULTIPART = """
from helpers.images import noise_png
image = noise_png(64, 64) + b"\\0" * (args["image_bytes"] - len(noise_png(64, 64)))
request = multipart_request("edits", {"model": "gpt-image-1.5", "prompt": "x", "image": file(image)})
encode_for_upstream(validate(parse_request("edits", request), CATALOG))
report("accepted")
"""

PIXELS = """
import io, math
from PIL import Image
from imagegw.images import DECODE_PIXEL_BUDGET, probe
from imagegw.domain import ImageFile
from imagegw.upstream.bedrock import NovaRequest
side = math.isqrt(DECODE_PIXEL_BUDGET)
out = io.BytesIO()
Image.new("RGBA", (side, side), (10, 20, 30, 0)).save(out, format="PNG", compress_level=1)
data = out.getvalue()
del out
info = probe(data)
image = ImageFile("image", data, "i.png", "image/png", info.format, info.width, info.height, info.mode)
bodies = NovaRequest("edits", {"prompt": "a hat", "n": 1}, [image], None).bodies()
report(f"accepted {side}x{side}, {len(bodies)} body")
"""


@pytest.fixture(scope="module")
def image_server():
    authority = LocalAuthority()
    server = ScriptedTlsServer(authority)
    yield server
    server.close()


def run_measured(script: str, **args: object) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script), json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_sixteen_maximum_size_image_urls_are_refused_within_the_function_memory(image_server):
    url = image_server.route("/max.png", serve(MAX_IMAGE))
    result = run_measured(FETCH, url=url, ca=str(image_server.authority.ca_pem))
    assert str(result["outcome"]).startswith("400 invalid_image_url images[")
    assert float(result["peak_mb"]) < FUNCTION_MEMORY_MB  # type: ignore[arg-type]


def test_sixteen_image_urls_that_fit_the_budget_are_fetched_and_encoded_within_the_memory(image_server):
    url = image_server.route("/fitting.png", serve(FITTING_IMAGE))
    result = run_measured(FETCH, url=url, ca=str(image_server.authority.ca_pem))
    assert result["outcome"] == "accepted"
    assert float(result["peak_mb"]) < FUNCTION_MEMORY_MB  # type: ignore[arg-type]


def test_the_largest_multipart_body_stays_within_the_memory(image_server):
    result = run_measured(MULTIPART, image_bytes=int(4.4 * MB), ca=str(image_server.authority.ca_pem))
    assert result["outcome"] == "accepted"
    assert float(result["peak_mb"]) < FUNCTION_MEMORY_MB / 2  # type: ignore[arg-type]


def test_the_largest_decoded_pixel_count_stays_within_the_memory(image_server):
    result = run_measured(PIXELS, ca=str(image_server.authority.ca_pem))
    assert str(result["outcome"]).startswith("accepted")
    assert float(result["peak_mb"]) < FUNCTION_MEMORY_MB  # type: ignore[arg-type]
