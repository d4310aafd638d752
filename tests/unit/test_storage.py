"""The S3 adapter against moto: content types, key layout, 60-minute presigned URLs, cleanup."""

import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from imagegw.delivery.storage import S3ImageStore, image_key

BUCKET = "images-test"


@pytest.fixture
def s3(aws_env):
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.mark.parametrize(
    ("fmt", "content_type", "ext"),
    [("png", "image/png", "png"), ("jpeg", "image/jpeg", "jpg"), ("webp", "image/webp", "webp"),
     ("svg", "image/svg+xml", "svg")],
)  # fmt: skip
def test_images_are_stored_with_their_content_type(s3, fmt, content_type, ext):
    store = S3ImageStore(s3, BUCKET, 3600)
    key = image_key("images", "req_abc", 0, fmt, now=1_795_838_400)
    store.put_image(key, b"bytes", fmt)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == content_type
    assert key == f"images/2026/11/28/req_abc/0.{ext}"
    assert store.get(key) == b"bytes"


def test_presigned_urls_last_the_configured_time(s3):
    store = S3ImageStore(s3, BUCKET, 3600)
    store.put_image("images/x.png", b"x", "png")
    query = parse_qs(urlsplit(store.presign("images/x.png")).query)
    if "X-Amz-Expires" in query:  # SigV4 query auth
        assert query["X-Amz-Expires"] == ["3600"]
    else:  # the legacy query auth carries an absolute expiry
        assert abs(int(query["Expires"][0]) - time.time() - 3600) < 60


def test_delete_removes_what_was_written_and_tolerates_nothing(s3):
    store = S3ImageStore(s3, BUCKET, 3600)
    keys = [image_key("images", "req_x", i, "png") for i in range(3)]
    for key in keys:
        store.put_image(key, b"x", "png")
    store.delete(keys)
    store.delete([])
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_the_key_layout_holds_no_caller_identity():
    key = image_key("images", "req_0123", 2, "png", now=0)
    assert key == "images/1970/01/01/req_0123/2.png"


def test_svg_results_are_attachments_never_pages_of_the_bucket(s3):
    """SVG can carry script: stored with Content-Disposition attachment, and every presigned link asks S3
    to answer it as a download (response-content-disposition); raster images stay inline."""
    store = S3ImageStore(s3, BUCKET, 3600)
    svg_key = image_key("images", "req_svg", 0, "svg")
    store.put_image(
        svg_key, b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "svg"
    )
    assert s3.head_object(Bucket=BUCKET, Key=svg_key)["ContentDisposition"] == "attachment"
    query = parse_qs(urlsplit(store.presign(svg_key)).query)
    assert query["response-content-disposition"] == ['attachment; filename="0.svg"']
    png_key = image_key("images", "req_png", 0, "png")
    store.put_image(png_key, b"png", "png")
    assert "ContentDisposition" not in s3.head_object(Bucket=BUCKET, Key=png_key)
    assert "response-content-disposition" not in parse_qs(urlsplit(store.presign(png_key)).query)


def test_exists_tells_a_stored_object_from_an_expired_one(s3):
    store = S3ImageStore(s3, BUCKET, 3600)
    store.put_image("images/here.png", b"x", "png")
    assert store.exists("images/here.png")
    assert not store.exists("images/expired.png")
