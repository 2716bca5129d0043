#!/usr/bin/env python3
"""An independent Kafka consumer (kafka-python) for scimtap's kafka sink tests.

Reads every record of TOPIC from the beginning of each partition, without a consumer group
(partitions are assigned, not subscribed), until COUNT records arrived and no more came for a
short while, or TIMEOUT seconds passed. Prints one JSON object per record, in partition then
offset order:

    {"topic", "partition", "offset", "key", "value", "timestamp", "headers",
     "partitions", "murmur2_partition"}

key and value are decoded as UTF-8; headers is an object of UTF-8 values; partitions is the
topic's partition count; murmur2_partition is where kafka-python's DefaultPartitioner (the Java
client's murmur2 algorithm) puts the key, so the test can check that scimtap partitions alike.
Exits 1 (with the records printed) when fewer than COUNT arrived.

Usage: kafka_consume.py BOOTSTRAP TOPIC COUNT [--timeout SECS] [--settle SECS] [--tls-ca PEM]

With --tls-ca the consumer connects over TLS, trusting that CA and checking the host name.
"""

import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="after COUNT records, keep reading this long to catch duplicates",
    )
    parser.add_argument("--tls-ca", help="connect over TLS, trusting this PEM CA bundle")
    args = parser.parse_args()
    tls = {}
    if args.tls_ca:
        tls = {
            "security_protocol": "SSL",
            "ssl_cafile": args.tls_ca,
            "ssl_check_hostname": True,
        }

    deadline = time.monotonic() + args.timeout
    consumer = KafkaConsumer(
        bootstrap_servers=[args.bootstrap],
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="scimtap-test-consumer",
        request_timeout_ms=10000,
        **tls,
    )
    try:
        partitions = None
        while partitions is None:
            found = consumer.partitions_for_topic(args.topic)
            if found:
                partitions = sorted(found)
            elif time.monotonic() > deadline:
                print(f"topic {args.topic} not found", file=sys.stderr)
                return 1
            else:
                time.sleep(0.2)
        assigned = [TopicPartition(args.topic, p) for p in partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)

        records = []
        settle_until = None
        while True:
            now = time.monotonic()
            if now > deadline or (settle_until is not None and now > settle_until):
                break
            batch = consumer.poll(timeout_ms=200)
            for _tp, messages in batch.items():
                records.extend(messages)
            if settle_until is None and len(records) >= args.count:
                settle_until = time.monotonic() + args.settle
    finally:
        consumer.close()

    records.sort(key=lambda r: (r.partition, r.offset))
    for r in records:
        key = r.key
        print(
            json.dumps(
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": None if key is None else key.decode("utf-8"),
                    "value": None if r.value is None else r.value.decode("utf-8"),
                    "timestamp": r.timestamp,
                    "headers": {k: v.decode("utf-8") for k, v in (r.headers or [])},
                    "partitions": len(partitions),
                    "murmur2_partition": None
                    if key is None
                    else (murmur2(key) & 0x7FFFFFFF) % len(partitions),
                }
            )
        )
    if len(records) < args.count:
        print(
            f"got {len(records)} of {args.count} records from {args.topic}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
