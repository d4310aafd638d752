"""In-memory test doubles, one of each, type-checked (mypy) against the interfaces they stand in for."""

from __future__ import annotations

from imagegw.delivery.storage import ImageStore


class InMemoryImageStore:
    """An `ImageStore` in a dict: `objects` maps key -> bytes, `formats` key -> the format it was put as.

    `presign` answers `url_template` with the key filled in, so a test can pin the exact URL it expects.
    """

    def __init__(self, url_template: str = "https://bucket.example/{key}?sig=1") -> None:
        self.url_template = url_template
        self.objects: dict[str, bytes] = {}
        self.formats: dict[str, str] = {}

    def put_image(self, key: str, data: bytes, fmt: str) -> None:
        self.objects[key] = data
        self.formats[key] = fmt

    def presign(self, key: str) -> str:
        return self.url_template.format(key=key)

    def get(self, key: str) -> bytes:
        return self.objects[key]

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)
            self.formats.pop(key, None)


# mypy fails here if a fake drifts from the interface it stands in for.
_image_store: ImageStore = InMemoryImageStore()
