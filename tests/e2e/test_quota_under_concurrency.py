"""The quota holds under concurrency through the local stack itself: 30 clients at once against a key with
10 images admit exactly 10, over HTTP, as `make dev` serves them (moto's server answers one request at a
time, as DynamoDB serializes the writes to one item: imagegw_dev.local_stack.moto_server)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from helpers.aws import stack_aws

from imagegw.accounts.keys import KeyStore

CLIENTS = 30
QUOTA = 10


def test_thirty_concurrent_generations_on_a_ten_image_quota_admit_exactly_ten(stack):
    keys_table = stack_aws(stack, "dynamodb", resource=True).Table(stack["tables"]["keys"])
    key = KeyStore(keys_table).create("concurrency", quota_images=QUOTA)

    def generate(_: int) -> int:
        response = requests.post(
            stack["api_url"] + "/images/generations",
            headers={"Authorization": f"Bearer {key.raw_key}"},
            json={
                "model": "dall-e-2",
                "prompt": "an otter",
                "size": "256x256",
                "response_format": "b64_json",
            },
            timeout=120,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        statuses = Counter(pool.map(generate, range(CLIENTS)))

    assert statuses == {200: QUOTA, 429: CLIENTS - QUOTA}
    item = keys_table.get_item(Key={"key_hash": key.item["key_hash"]}, ConsistentRead=True)["Item"]
    assert int(item["used_images"]) == QUOTA
    assert not [name for name in item if name.startswith("hold#")]  # every admission settled
