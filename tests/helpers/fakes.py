"""In-memory test doubles, one of each, type-checked (mypy) against the interfaces they stand in for."""

from __future__ import annotations

from collections.abc import Callable

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


class FakeClock:
    """A clock that moves only when a test moves it (`clock.now += 60`) or something sleeps on it.

    Calling it answers `now` (a `Callable[[], float]`, like `time.time` or `time.monotonic`); `sleep`
    records each pause in `sleeps` and moves `now` on by it instead of waiting.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# mypy fails here if a fake drifts from the interface it stands in for.
_image_store: ImageStore = InMemoryImageStore()
_clock: Callable[[], float] = FakeClock()
_sleep: Callable[[float], None] = FakeClock().sleep
