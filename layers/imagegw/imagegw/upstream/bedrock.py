"""Amazon Bedrock: Amazon Nova Canvas and Stability AI's models (`upstream/stability.py`) over
`bedrock-runtime` InvokeModel (provider type `bedrock`). A route model naming `stability.` gets
Stability's body; any other gets Nova Canvas's (below).

    "providers": {"bedrock": {"type": "bedrock", "region": "us-east-1"}}
    "models": {"dall-e-2": [{"provider": "bedrock", "model": "amazon.nova-canvas-v1:0"}]}

The route's `model` is the Bedrock model id (or an inference-profile id/ARN). Authentication is the
function's IAM role (`bedrock:InvokeModel`, template parameter `BedrockModelArns`), never the upstream
secret. `endpoint_url` (optional) points the client elsewhere: the upstream emulator in tests.

- generations -> TEXT_IMAGE: prompt -> text, n -> numberOfImages, size -> width/height.
- edits -> INPAINTING of the first image. The mask's fully transparent pixels (OpenAI: alpha 0 = edit
  here) become Nova's maskImage black (edit here), the rest white (keep). Without a mask: the image's own
  transparency (dall-e-2), else the `mask_prompt` parameter (a translation's `set`) as maskPrompt, else a
  400 naming `mask` (Nova only edits a masked area; route mask-less edits elsewhere with `operations`).
- variations -> IMAGE_VARIATION: images (up to 5), text from the prompt a translation sets (optional),
  similarityStrength from `similarity_strength` (default 0.7).

Sizes: Nova takes sides of 320-4096 pixels, multiples of 16, an aspect ratio within 1:4..4:1 and at most
4,194,304 pixels (2048x2048). Any other size is asked as the nearest size Nova takes and the images are
scaled (cover + centre crop) back to the size the client asked for; input images are resized the same
way (and flattened to RGB: Nova refuses transparent pixels in an input image). n above 5 (Nova's most per
call) is served by several calls within the same attempt timeout. quality high/hd -> premium, anything
else -> standard. Nova answers PNG; output_format jpeg/webp is converted here. Nova reports no usage.

Optional parameters a translation may `set`: `negative_prompt` (negativeText), `cfg_scale` (cfgScale),
`seed`, `similarity_strength`, `mask_prompt`.

Failures: ThrottlingException, ServiceUnavailableException, ModelTimeoutException, ModelNotReadyException,
InternalServerException, any 5xx, timeouts and connection errors are retried (TransientFailure);
AccessDeniedException, ResourceNotFoundException, ServiceQuotaExceededException, ModelErrorException and
missing AWS credentials fail over (RouteFault); ValidationException (which carries Nova's content-filter
refusals too) is the client's 400, scrubbed; a body that is not JSON or an image that is not valid base64
is UpstreamMalformed. A 200 whose `error` says every image was blocked is a 400 `moderation_blocked`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from imagegw.domain import GeneratedImage, ImageFile, Operation, UpstreamResult
from imagegw.images import DECODE_PIXEL_BUDGET, ImageTooLarge, ImageUnreadable, open_within_budget
from imagegw.upstream.config import ProviderConfig, RoutesError
from imagegw.upstream.failures import (
    RouteFault,
    TransientFailure,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamRejected,
    is_timeout,
)
from imagegw.upstream.providers import ProviderContext
from imagegw.upstream.stability import StabilityRequest, stability_kind
from imagegw.upstream.translation import convert_format, fit_to
from imagegw.upstream.wire import decode_image_b64, json_object, scrub

CLIENT_KEY = "bedrock-runtime"
MIN_SIDE = 320
MAX_SIDE = 4096
SIDE_STEP = 16
MAX_ASPECT = 4
MAX_PIXELS = 4_194_304
MAX_IMAGES_PER_CALL = 5
MAX_VARIATION_IMAGES = 5
DEFAULT_SIZE = (1024, 1024)
DEFAULT_SIMILARITY = 0.7
CONNECT_TIMEOUT_S = 3.05
MIN_TIMEOUT_S = 0.2
_CLIENTS_KEPT = 8

TRANSIENT_ERRORS = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "InternalServerException",
    }
)
ROUTE_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "ServiceQuotaExceededException",
        "ModelErrorException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
    }
)
REJECTED_ERRORS = frozenset({"ValidationException"})
_CONNECTION_ERRORS = (
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectionError",
    "ProxyConnectionError",
    "SSLError",
    "HTTPClientError",
)


# --------------------------------------------------------------------------------------------------
# Pure mapping: sizes, masks, request bodies, answers


def nova_size(width: int, height: int) -> tuple[int, int]:
    """The size Nova Canvas takes nearest to `width`x`height` (same if it already takes it)."""
    w, h = max(1, int(width)), max(1, int(height))
    if w > MAX_ASPECT * h:
        h = math.ceil(w / MAX_ASPECT)
    elif h > MAX_ASPECT * w:
        w = math.ceil(h / MAX_ASPECT)
    scale = 1.0
    if w * h > MAX_PIXELS:
        scale = math.sqrt(MAX_PIXELS / (w * h))
    if min(w, h) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(w, h)
    out_w = min(MAX_SIDE, max(MIN_SIDE, int(w * scale) // SIDE_STEP * SIDE_STEP))
    out_h = min(MAX_SIDE, max(MIN_SIDE, int(h * scale) // SIDE_STEP * SIDE_STEP))
    out_w = min(out_w, MAX_ASPECT * out_h)  # rounding down one side may have stretched the ratio
    out_h = min(out_h, MAX_ASPECT * out_w)
    return out_w, out_h


def parse_size(value: Any) -> tuple[int, int] | None:
    """`WxH` as integers; None for auto, missing or anything else."""
    if not isinstance(value, str) or "x" not in value:
        return None
    left, _, right = value.partition("x")
    if not (left.isdigit() and right.isdigit()) or int(left) < 1 or int(right) < 1:
        return None
    return int(left), int(right)


def nova_quality(value: Any) -> str:
    return "premium" if str(value).lower() in ("high", "hd", "premium") else "standard"


def _png(img: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _open(data: bytes, what: str) -> Any:
    """An input decoded for Nova, its size checked against the pixel budget from the header first (a small
    PNG can declare 9459x9459 pixels: 1.2 GB and seconds of work once decoded and converted)."""
    try:
        img = open_within_budget(data)
        img.load()
    except ImageTooLarge:
        raise UpstreamRejected(
            f"Invalid file '{what}': the image is too large for this model; images of at most "
            f"{DECODE_PIXEL_BUDGET:,} pixels are accepted.",
            status=400,
            param=what,
            code="image_too_large",
        ) from None
    except (ImageUnreadable, OSError, ValueError):
        raise UpstreamRejected(f"The {what} could not be decoded.", status=400, param=what) from None
    return img


def transparent_area(img: Any) -> Any | None:
    """An L image, 0 (black) where `img` is fully transparent and 255 (white) elsewhere; None if `img`
    has no transparency at all."""
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in img.info:
        return None
    alpha = img.convert("RGBA").getchannel("A")
    area = alpha.point(lambda a: 0 if a == 0 else 255)
    return area if area.getextrema()[0] == 0 else None


def nova_mask(mask_source: Any, size: tuple[int, int]) -> bytes | None:
    """OpenAI's mask convention (alpha 0 = edit here) as Nova's maskImage (pure black = edit here, pure
    white = keep), at `size`; None when the source has no fully transparent pixel."""
    from PIL import Image

    area = transparent_area(mask_source)
    if area is None:
        return None
    if area.size != size:
        area = area.resize(size, Image.Resampling.NEAREST)  # nearest: stays pure black and white
    return _png(area.convert("RGB"))


def nova_input(img: Any) -> tuple[Any, tuple[int, int]]:
    """An input image as Nova takes it: RGB (transparent pixels flattened onto white) at a size Nova
    takes. Returns (the image, its original size)."""
    from PIL import Image

    original = img.size
    rgba = img.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, (0, 0), rgba)
    target = nova_size(*original)
    if flat.size != target:
        flat = flat.resize(target, Image.Resampling.LANCZOS)
    return flat, original


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _config(params: Mapping[str, Any], count: int, size: tuple[int, int] | None) -> dict[str, Any]:
    config: dict[str, Any] = {"numberOfImages": count, "quality": nova_quality(params.get("quality"))}
    if size is not None:
        config["width"], config["height"] = size
    cfg_scale = params.get("cfg_scale")
    if isinstance(cfg_scale, int | float) and not isinstance(cfg_scale, bool):
        config["cfgScale"] = float(cfg_scale)
    seed = params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        config["seed"] = seed
    return config


def _text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return value if isinstance(value, str) and value.strip() else None


class NovaRequest:
    """One client request as Nova Canvas bodies (one per batch of up to 5 images) and what to do with
    the answer (the size to scale the images to, the format to convert them to)."""

    def __init__(
        self,
        operation: Operation,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
    ) -> None:
        self.params = dict(params)
        n = self.params.get("n", 1)
        self.n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        fmt = str(self.params.get("output_format") or "png").lower()
        self.output_format = "jpeg" if fmt == "jpg" else fmt
        self.task: dict[str, Any]
        self.size: tuple[int, int] | None  # what imageGenerationConfig asks (None: the input's size)
        self.resize_to: tuple[int, int] | None
        requested = parse_size(self.params.get("size"))
        if operation == "generations":
            wanted = requested or DEFAULT_SIZE
            self.size = nova_size(*wanted)
            self.resize_to = wanted if wanted != self.size else None
            text: dict[str, Any] = {"text": str(self.params.get("prompt") or "")}
            if negative := _text(self.params, "negative_prompt"):
                text["negativeText"] = negative
            self.task = {"taskType": "TEXT_IMAGE", "textToImageParams": text}
        elif operation == "edits":
            self.task, nova_side, original = self._inpainting(images, mask)
            self.size = None  # INPAINTING answers at the input image's size
            wanted = requested or original
            self.resize_to = wanted if wanted != nova_side else None
        elif operation == "variations":
            if not images:
                raise UpstreamRejected("A variation needs an image.", status=400, param="image")
            inputs = [nova_input(_open(f.data, "image")) for f in images[:MAX_VARIATION_IMAGES]]
            wanted = requested or inputs[0][1]
            self.size = nova_size(*wanted)
            self.resize_to = wanted if wanted != self.size else None
            strength = self.params.get("similarity_strength", DEFAULT_SIMILARITY)
            if isinstance(strength, bool) or not isinstance(strength, int | float):
                strength = DEFAULT_SIMILARITY
            variation: dict[str, Any] = {
                "images": [_b64(_png(img)) for img, _ in inputs],
                "similarityStrength": float(strength),
            }
            if prompt := _text(self.params, "prompt"):
                variation["text"] = prompt
            if negative := _text(self.params, "negative_prompt"):
                variation["negativeText"] = negative
            self.task = {"taskType": "IMAGE_VARIATION", "imageVariationParams": variation}
        else:  # pragma: no cover - the router only passes the three operations
            raise RouteFault(f"Amazon Nova Canvas does not serve {operation}.")

    def _inpainting(
        self, images: Sequence[ImageFile], mask: ImageFile | None
    ) -> tuple[dict[str, Any], tuple[int, int], tuple[int, int]]:
        if not images:
            raise UpstreamRejected("An edit needs an image.", status=400, param="image")
        source = _open(images[0].data, "image")
        flat, original = nova_input(source)
        params: dict[str, Any] = {"image": _b64(_png(flat))}
        if prompt := _text(self.params, "prompt"):
            params["text"] = prompt
        if negative := _text(self.params, "negative_prompt"):
            params["negativeText"] = negative
        if mask is not None:
            mask_png = nova_mask(_open(mask.data, "mask"), flat.size)
            if mask_png is None:
                raise UpstreamRejected(
                    "The mask has no fully transparent pixels: nothing to edit. Make the area to edit "
                    "transparent (alpha 0).",
                    status=400,
                    param="mask",
                    code="invalid_value",
                )
            params["maskImage"] = _b64(mask_png)
        elif (own := nova_mask(source, flat.size)) is not None:
            params["maskImage"] = _b64(own)  # dall-e-2 semantics: the image's transparency is the mask
        elif mask_prompt := _text(self.params, "mask_prompt"):
            params["maskPrompt"] = mask_prompt
        else:
            raise UpstreamRejected(
                "This model's upstream edits a masked area only: send a mask (or an image) whose fully "
                "transparent pixels mark the area to edit.",
                status=400,
                param="mask",
                code="missing_required_parameter",
            )
        return {"taskType": "INPAINTING", "inPaintingParams": params}, flat.size, original

    def bodies(self) -> list[dict[str, Any]]:
        """One InvokeModel body per batch of up to 5 images (a given seed moves on for each batch)."""
        out = []
        left = self.n
        batch = 0
        while left > 0:
            count = min(MAX_IMAGES_PER_CALL, left)
            config = _config(self.params, count, self.size)
            if "seed" in config and batch:
                config["seed"] = (config["seed"] + batch) % 2_147_483_647
            out.append({**self.task, "imageGenerationConfig": config})
            left -= count
            batch += 1
        return out

    def parse(self, payload: bytes) -> list[bytes]:
        return parse_answer(payload)

    def finish(self, data: bytes) -> bytes:
        """A Nova image (PNG) at the client's size and in the client's format."""
        if self.resize_to is not None:
            data = fit_to(data, self.resize_to)
        if self.output_format in ("jpeg", "webp"):
            data = convert_format(data, self.output_format, self.params.get("output_compression"))
        return data


def parse_answer(body: bytes) -> list[bytes]:
    """The images of a Nova Canvas answer `{"images": [b64...], "error"?: str}`."""
    doc = json_object(body)
    items = doc.get("images")
    error = doc.get("error")
    if items is not None and not isinstance(items, list):
        raise UpstreamMalformed("The upstream answer's images are not a list.")
    images = [decode_image_b64(item, "image") for item in items or []]
    if not images:
        if isinstance(error, str) and error:
            # RAI output deflection: every generated image was blocked by the content filters.
            raise UpstreamRejected(scrub(error), status=400, code="moderation_blocked")
        raise UpstreamMalformed("The upstream answer holds no image.")
    return images


def classify_client_error(code: str, status: int | None, message: str) -> Exception:
    """A botocore ClientError (its error code, HTTP status and message) as a `failures` type."""
    if code in REJECTED_ERRORS:
        return UpstreamRejected(scrub(message) or "The upstream refused the request.", status=400)
    if code in TRANSIENT_ERRORS or (status is not None and (status >= 500 or status in (408, 429))):
        return TransientFailure(f"Bedrock answered {code or status}.", status=status, timed_out=status == 408)
    if code in ROUTE_ERRORS or status in (401, 403, 404):
        return RouteFault(f"Bedrock answered {code or status}.", status=status)
    if status is not None and 400 <= status < 500:
        return UpstreamRejected(scrub(message) or "The upstream refused the request.", status=400)
    return RouteFault(f"Bedrock answered {code or status}.", status=status)


# --------------------------------------------------------------------------------------------------
# The provider


class BedrockProvider:
    """Nova Canvas through `bedrock-runtime` InvokeModel with boto3.

    The client: `context.clients["bedrock-runtime"]` when given (tests, the local stack), used as the
    template for region, endpoint, credentials and config; else one made on first use from `region` and
    `endpoint_url`. Either way each attempt uses a copy whose connect/read timeouts come from the
    attempt's timeout and whose retries are off (the router retries); copies are kept per timeout.
    Nothing calls AWS when the provider is built.
    """

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        options = dict(config.options)
        region = options.get("region")
        endpoint_url = options.get("endpoint_url")
        template = context.clients.get(CLIENT_KEY)
        if template is None and not (isinstance(region, str) and region):
            raise RoutesError(f"providers.{config.name} needs a region")
        if endpoint_url is not None and (
            not isinstance(endpoint_url, str) or not endpoint_url.startswith(("https://", "http://"))
        ):
            raise RoutesError(f"providers.{config.name}.endpoint_url must start with https:// or http://")
        self.config = config
        self.region = region if isinstance(region, str) else None
        self.endpoint_url = endpoint_url
        self._template = template
        self._session: Any = None
        self._clients: OrderedDict[float, Any] = OrderedDict()

    @classmethod
    def create(cls, config: ProviderConfig, context: ProviderContext) -> BedrockProvider:
        return cls(config, context)

    # -- clients --

    def _client(self, timeout: float) -> Any:
        """A client whose read timeout ends this attempt in time (rounded down to 0.5 s), no retries."""
        read = max(MIN_TIMEOUT_S, math.floor(timeout * 2) / 2)
        client = self._clients.get(read)
        if client is not None:
            self._clients.move_to_end(read)
            return client
        client = self._new_client(read)
        self._clients[read] = client
        while len(self._clients) > _CLIENTS_KEPT:
            self._clients.popitem(last=False)
        return client

    def _new_client(self, read: float) -> Any:
        import boto3
        from botocore.config import Config

        timeouts = Config(
            connect_timeout=min(CONNECT_TIMEOUT_S, read),
            read_timeout=read,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        if self._session is None:
            self._session = boto3.session.Session()
        template = self._template
        if template is None:
            return self._session.client(
                CLIENT_KEY,
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=Config(user_agent_extra="imagegw").merge(timeouts),
            )
        credentials = _credentials_of(template)
        return self._session.client(
            CLIENT_KEY,
            region_name=self.region or template.meta.region_name,
            endpoint_url=self.endpoint_url or template.meta.endpoint_url,
            config=template.meta.config.merge(timeouts),
            **credentials,
        )

    # -- the call --

    def call(
        self,
        *,
        operation: Operation,
        model: str,
        params: Mapping[str, Any],
        images: Sequence[ImageFile],
        mask: ImageFile | None,
        stream: bool,
        timeout: float,
        markup: ImageFile | None = None,
    ) -> UpstreamResult:
        deadline = time.monotonic() + timeout
        kind = stability_kind(model)
        plan: NovaRequest | StabilityRequest = (
            NovaRequest(operation, params, images, mask)
            if kind is None
            else StabilityRequest(kind, operation, params, images, mask)
        )
        generated: list[GeneratedImage] = []
        try:
            for body in plan.bodies():
                left = deadline - time.monotonic()
                if left < MIN_TIMEOUT_S:
                    raise TransientFailure("The upstream did not answer in time.", timed_out=True)
                for data in plan.parse(self._invoke(model, body, left)):
                    generated.append(GeneratedImage(plan.finish(data)))
        except UpstreamFailure as exc:
            exc.sent = exc.sent or bool(generated)  # an earlier call of the plan produced (billed) images
            raise
        meta: dict[str, Any] = {"output_format": plan.output_format}
        return UpstreamResult(images=generated, usage=None, meta=meta)

    def _invoke(self, model: str, body: Mapping[str, Any], timeout: float) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        client = self._client(timeout)
        try:
            response = client.invoke_model(
                modelId=model,
                body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
                contentType="application/json",
                accept="application/json",
            )
            payload = response["body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            failure = classify_client_error(
                str(error.get("Code") or ""), status, str(error.get("Message") or "")
            )
            if isinstance(failure, UpstreamRejected):
                failure.message = scrub(failure.message, [model, self.endpoint_url or ""])
            raise failure from None
        except NoCredentialsError:
            raise RouteFault("No AWS credentials to call Bedrock with.") from None
        except BotoCoreError as exc:
            name = type(exc).__name__
            if is_timeout(exc):
                sent = name not in ("ConnectTimeoutError", "EndpointConnectionError")
                raise TransientFailure(
                    "The upstream did not answer in time.", timed_out=True, sent=sent
                ) from None
            if name in _CONNECTION_ERRORS or isinstance(exc, ConnectionError):
                raise TransientFailure(
                    "The upstream could not be reached or dropped the connection."
                ) from None
            raise RouteFault(f"Calling Bedrock failed ({name}).") from None
        return bytes(payload)


def _credentials_of(client: Any) -> dict[str, Any]:
    """The credentials a given client signs with, to make its copies with (empty: the default chain)."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None:
        return {}
    frozen = credentials.get_frozen_credentials()
    return {
        "aws_access_key_id": frozen.access_key,
        "aws_secret_access_key": frozen.secret_key,
        "aws_session_token": frozen.token,
    }
