"""S3 adapter: stores generated images and input images, signs 60-minute GET URLs.

Keys never contain the API key or its hash: `images/<yyyy>/<mm>/<dd>/<request id>/<index>.<ext>`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",  # gpt-image-2.5+ output_format svg
}


class ImageStore(Protocol):
    def put_image(self, key: str, data: bytes, fmt: str) -> None: ...
    def presign(self, key: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, keys: list[str]) -> None: ...


class S3ImageStore:
    def __init__(self, s3_client: Any, bucket: str, url_ttl_seconds: int) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._ttl = url_ttl_seconds

    def put_image(self, key: str, data: bytes, fmt: str) -> None:
        extra = {"ContentDisposition": "attachment"} if is_active_content(key) else {}
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=data,
            ContentType=CONTENT_TYPES.get(fmt, "application/octet-stream"),
            CacheControl="private, max-age=3600",
            **extra,
        )

    def presign(self, key: str) -> str:
        params = {"Bucket": self._bucket, "Key": key}
        if is_active_content(key):  # a download, never a page rendered from the bucket's origin
            params["ResponseContentDisposition"] = f'attachment; filename="{key.rsplit("/", 1)[-1]}"'
        url: str = self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=self._ttl)
        return url

    def get(self, key: str) -> bytes:
        data: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        """False once the object is gone (the bucket's lifecycle rule expires images)."""
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._s3.delete_objects(
                Bucket=self._bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )


def is_active_content(key: str) -> bool:
    """SVG can carry script: served as an attachment, so a browser never renders it as a page of the
    bucket's origin."""
    return key.lower().endswith(".svg")


def image_key(prefix: str, request_id: str, index: int, fmt: str, now: float | None = None) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime(now if now is not None else time.time()))
    ext = "jpg" if fmt == "jpeg" else fmt
    return f"{prefix}/{day}/{request_id}/{index}.{ext}"
