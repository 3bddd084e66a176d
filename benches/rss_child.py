"""Child of the memory bench: one upload of a large file, with its RSS.

Usage: rss_child.py ours|boto3 BUCKET KEY PATH CRC32C PART_SIZE CONCURRENCY

The endpoint is ``AWS_ENDPOINT_URL`` (the proxy). Warms up with a small
object (imports, connection), prints ``idle <VmRSS kB>``, resets the peak
(``/proc/self/clear_refs``), uploads PATH (ours: ``S3Remote.put_if_absent``
then a HEAD verify; boto3: ``upload_file`` with its default transfer
config), and prints ``peak <VmHWM kB>`` and ``seconds <upload time>``.
"""

import os
import sys
import time


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    mode, bucket, key, path = sys.argv[1:5]
    crc, part_size, concurrency = (int(a) for a in sys.argv[5:8])
    size = os.path.getsize(path)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if mode == "ours":
        from tieredindex import StoreConfig, crc32c
        from tieredindex.remote import S3Remote

        cfg = StoreConfig()
        remote = S3Remote(
            bucket,
            key.rsplit("/", 1)[0],
            endpoint_url=endpoint,
            region="us-east-1",
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            multipart_threshold=cfg.multipart_threshold,
            part_size=part_size,
            upload_concurrency=concurrency,
        )
        name = key.rsplit("/", 1)[1]
        remote.put_if_absent(name + ".warm", b"warm", size=4, crc32c=crc32c(b"warm"))

        def upload() -> None:
            remote.put_if_absent(name, path, size=size, crc32c=crc)
            info = remote.head(name)
            assert info is not None and info.size == size and info.crc32c == crc, info

    else:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            region_name="us-east-1",
            endpoint_url=endpoint,
            config=Config(s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=bucket, Key=key + ".warm", Body=b"warm")

        def upload() -> None:
            client.upload_file(path, bucket, key)

    print("idle", status_kb("VmRSS"), flush=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    started = time.perf_counter()
    upload()
    elapsed = time.perf_counter() - started
    print("peak", status_kb("VmHWM"), flush=True)
    print("seconds", f"{elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
