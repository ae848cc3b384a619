"""Reads one tenant's payment transitions from paytrack's NATS as that tenant's reader.

The recipe of docs/readers.md for Python (nats-py): connect as `reader-<tenant>` with
its own inbox prefix, create a consumer on the status mirror with a name and a filter
inside the tenant (nats-py then sends the create that names its filter, the only one
a tenant reader may send), pull the history, then follow live transitions.

Environment: NATS_URL, READER_TENANT, READER_PASSWORD.
Arguments: how many transitions to print (history first, then live ones), and
optionally the stream position to resume after.
Prints one line per transition: `<position> <payment_id> <version> <status>`.
"""

import asyncio
import json
import os
import sys
import uuid

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

STATUS_MIRROR = "PAYTRACK_STATUS_READ"


async def main() -> None:
    tenant = os.environ["READER_TENANT"]
    count = int(sys.argv[1])
    after = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    user = f"reader-{tenant}"
    nc = await nats.connect(
        os.environ["NATS_URL"],
        user=user,
        password=os.environ["READER_PASSWORD"],
        inbox_prefix=f"_INBOX_{user}",
    )
    js = nc.jetstream()
    # A random name: nobody else can guess it to pull from this consumer.
    name = f"py-{uuid.uuid4().hex}"
    start = (
        {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after + 1}
        if after
        else {"deliver_policy": DeliverPolicy.ALL}
    )
    await js.add_consumer(
        STATUS_MIRROR,
        ConsumerConfig(
            name=name,
            filter_subject=f"paytrack.status.{tenant}.>",
            ack_policy=AckPolicy.NONE,
            **start,
        ),
    )
    pulled = await js.pull_subscribe_bind(name, stream=STATUS_MIRROR)
    printed = 0
    while printed < count:
        try:
            messages = await pulled.fetch(batch=count - printed, timeout=5)
        except nats.errors.TimeoutError:
            continue
        for message in messages:
            transition = json.loads(message.data)
            print(
                message.metadata.sequence.stream,
                transition["payment_id"],
                transition["version"],
                transition["status"],
                flush=True,
            )
            printed += 1
    await js.delete_consumer(STATUS_MIRROR, name)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
