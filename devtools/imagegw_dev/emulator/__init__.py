"""The upstream emulator: a TEST DOUBLE of the upstream image services (OpenAI, Azure OpenAI, Amazon Bedrock).

It is NOT an image model. It speaks the OpenAI Images wire format over real HTTP and answers with
deterministic placeholder pictures drawn with Pillow (same inputs, same bytes), so the gateway can be
developed and tested locally without calling a paid upstream. Use it for local development and tests only.

Routes
    POST /v1/images/generations                         JSON
    POST /v1/images/edits                               multipart (image, image[], image[N], mask) or JSON
    POST /v1/images/variations                          multipart
    POST /openai/deployments/{deployment}/images/generations|edits?api-version=...   (Azure OpenAI)
    POST /model/{modelId}/invoke                        Amazon Bedrock runtime InvokeModel, Nova Canvas JSON
    GET  /files/<id>.<ext>                              images previously answered as `url`
    POST /_emulator/faults   {"faults": [...]} queues faults, {"mode": {...}|null} sets/clears the fault mode
    GET  /_emulator/faults   the queued faults and the mode
    GET  /_emulator/requests the recorded image requests
    POST /_emulator/reset    clears recorded requests and faults
    GET  /_emulator/health   {"ok": true}

Faults (see `Fault`) are taken, for each image request, from (first match wins): a `[[emulator:...]]`
directive in the prompt (that request only; the queue is left alone), else the next queued fault
(consumed), else the fault mode. Directive tokens, comma-separated or in several directives:
`500` (any 3-digit status; `429` also sets retry-after: 1), `delay=2.5`, `retry-after=3`, `drop`,
`malformed`, `truncated`. The directive is stripped from the prompt before drawing.

Usage tokens (GPT image models): text_tokens = ceil(len(prompt) / 4); image_tokens = 65 per input image
(the mask is not counted; 0 for generations); output_tokens = n * ceil(B * W * H / 1024**2) where B is
272 (low), 1056 (medium), 4160 (high), 8320 (xhigh), 16640 (max), OpenAI's own per-1024x1024 figures
for gpt-image-1; input_tokens = text + image; total = input + output. Quality auto/standard answers
"medium", hd answers "high".

Output formats: png, jpeg, webp; for GPT image models without streaming also gif (animated: `frame_count`
frames, default 4, `frame_duration_ms` each, default 250) and svg (a drawn SVG document, n=1).

Bedrock (`POST /model/{modelId}/invoke`, e.g. boto3 `bedrock-runtime` with `endpoint_url` = the base URL):
the body is Nova Canvas JSON (taskType TEXT_IMAGE, INPAINTING with maskImage (black = edit) or maskPrompt,
IMAGE_VARIATION), answered `{"images": [b64 PNG...]}`. The SigV4 signature is not checked (nor the API
key), the request is recorded. Faults apply the same way (a directive in the text prompt, the queue, the
mode); an error status answers Bedrock's error shape: `{"message": ...}` with `x-amzn-ErrorType` (429
ThrottlingException, 400 ValidationException, 403 AccessDeniedException, 404 ResourceNotFoundException,
408 ModelTimeoutException, 503 ServiceUnavailableException, other 5xx InternalServerException).

Streaming (`stream: true`, GPT image models): for each of the n images, `partial_images` partial events
(downscaled, blocky versions of the final image) then one completed event carrying that image's usage.

Modules: `server` (HTTP server, request dispatch, the `Emulator`, the CLI), `openai_wire` (OpenAI and
Azure OpenAI requests, answers and streams), `bedrock_wire` (Bedrock runtime, Nova Canvas), `faults`
(directives, the queue, the mode), `drawing` (the deterministic pictures).
"""

from imagegw_dev.emulator.faults import Fault
from imagegw_dev.emulator.server import Emulator, RecordedRequest, main

__all__ = ["Emulator", "Fault", "RecordedRequest", "main"]
