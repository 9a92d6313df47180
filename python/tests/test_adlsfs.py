"""The adlsfs package against a real mount on Azurite, with the real thds wheels.

Run by tests/python.rs, which starts Azurite, uploads the blobs below, mounts the
container and passes (all required; a missing one fails, never skips):
  ADLSFS_TEST_MOUNT      the mountpoint
  ADLSFS_TEST_LOCATION   adls://<account>/<container>
  ADLSFS_BIN             the adlsfs binary, for `adlsfs stats`
  AZURE_STORAGE_CONNECTION_STRING  Azurite's
Blobs: data/{a.csv,b.csv,with space é.csv} and many/f0000..f0999 with xxh3 metadata,
raw/nodigest.bin without.
"""

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from azure.storage.blob import BlobServiceClient
from thds.adls import AdlsFqn
from thds.core import source, uri_assign
from thds.core.hashing import Hash
from thds.core.source import serde

import adlsfs

MOUNT = Path(os.environ["ADLSFS_TEST_MOUNT"])
LOCATION = os.environ["ADLSFS_TEST_LOCATION"]
ADLSFS_BIN = os.environ["ADLSFS_BIN"]
CONNECTION_STRING = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
REPO = Path(__file__).resolve().parents[2]


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples over all labels."""
    lines = (line.split() for line in text.splitlines() if not line.startswith("#"))
    return sum(float(f[-1]) for f in lines if f and f[0].split("{")[0] == name)


def fetches() -> float:
    """Blobs the daemon has downloaded so far (misses; every miss is a fetch)."""
    out = subprocess.run([ADLSFS_BIN, "stats", str(MOUNT)], check=True, capture_output=True, text=True)
    return metric(out.stdout, "adlsfs_cache_misses_total") + metric(out.stdout, "adlsfs_fetches_total")


def blob_bytes(uri: str) -> bytes:
    """The blob's bytes through the Azure SDK (thds.adls only talks to *.blob.core.windows.net)."""
    fqn = AdlsFqn.parse(uri)
    client = BlobServiceClient.from_connection_string(CONNECTION_STRING)
    return client.get_blob_client(fqn.container, fqn.path).download_blob().readall()


def test_source_hash_equals_what_thds_computes_by_reading_the_file():
    path = MOUNT / "data" / "a.csv"
    src = adlsfs.source(path)
    read = source.from_file(path)  # reads and hashes (xxh3_128, thds.adls being imported)
    assert src.hash == read.hash
    assert src.hash.algo == "xxh3_128"
    assert src.size == os.path.getsize(path) == read.size
    assert src.cached_path == path


def test_uri_parses_as_the_blobs_adls_fqn():
    account, container = LOCATION.removeprefix("adls://").split("/")
    for name in ["data/a.csv", "data/with space é.csv"]:
        src = adlsfs.source(MOUNT / name)
        assert src.uri == f"{LOCATION}/{name}"
        assert AdlsFqn.parse(src.uri) == AdlsFqn.of(account, container, name)


def test_thousand_sources_download_nothing():
    paths = sorted((MOUNT / "many").iterdir())
    assert len(paths) == 1000
    before = fetches()
    sources = [adlsfs.source(p) for p in paths]
    assert fetches() == before, "creating Sources downloaded blobs"
    assert all(s.hash and s.hash.algo == "xxh3_128" for s in sources)
    assert len({s.uri for s in sources}) == 1000
    # The counter does see a download: reading one file is one fetch.
    paths[0].read_bytes()
    assert fetches() > before


def test_source_survives_serialisation_round_trip():
    src = adlsfs.source(MOUNT / "data" / "b.csv")
    back = serde.from_json(serde.to_json(src))
    assert (back.uri, back.hash, back.size) == (src.uri, src.hash, src.size)
    data = blob_bytes(back.uri)
    assert len(data) == back.size
    assert xxhash.xxh3_128(data).digest() == back.hash.bytes


def test_uri_hook_gives_from_file_the_blobs_uri():
    path = MOUNT / "data" / "a.csv"
    assert source.from_file(path).uri.startswith("file://")
    with uri_assign.add_hook(adlsfs.uri_hook):
        assert source.from_file(path).uri == f"{LOCATION}/data/a.csv"
    assert source.from_file(path).uri.startswith("file://")


def test_not_mounted_path_falls_back_to_from_file(tmp_path):
    path = tmp_path / "local.txt"
    path.write_bytes(b"local data")
    assert not adlsfs.is_mounted(path)
    src = adlsfs.source(path)
    assert src == source.from_file(path)
    assert src.uri == path.resolve().as_uri()
    assert src.hash == Hash("xxh3_128", xxhash.xxh3_128(b"local data").digest())
    assert adlsfs.uri_hook(path) == ""
    assert adlsfs.digests(path) == {}


def test_is_mounted():
    assert adlsfs.is_mounted(MOUNT)
    assert adlsfs.is_mounted(MOUNT / "data" / "a.csv")
    assert adlsfs.is_mounted(str(MOUNT / "data"))
    assert not adlsfs.is_mounted(MOUNT.parent)
    assert not adlsfs.is_mounted("/")


def test_blob_without_xxh3_gets_its_digest_on_demand(caplog):
    path = MOUNT / "raw" / "nodigest.bin"
    data = blob_bytes(f"{LOCATION}/raw/nodigest.bin")
    before = fetches()
    with caplog.at_level(logging.DEBUG, logger="adlsfs"):
        src = adlsfs.source(path)
    assert src.hash == Hash("xxh3_128", xxhash.xxh3_128(data).digest())
    assert fetches() > before, "the digest did not come from the daemon's materialisation"
    assert any("xxh3_128" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    found = adlsfs.digests(path)
    assert found["xxh3_128"] == src.hash
    assert found["md5"] == Hash("md5", hashlib.md5(data).digest())


def test_digests_of_a_blob_with_xxh3_metadata():
    path = MOUNT / "data" / "a.csv"
    before = fetches()
    found = adlsfs.digests(path)
    assert fetches() == before
    assert found["xxh3_128"] == adlsfs.source(path).hash


def test_docs_example_runs_as_written():
    example = REPO / "python" / "examples" / "pipeline_step.py"
    assert example.read_text() in (REPO / "docs" / "PYTHON.md").read_text()
    out = subprocess.run(
        [sys.executable, str(example), str(MOUNT / "data")], check=True, capture_output=True, text=True
    ).stdout
    got = [serde.from_json(line) for line in out.splitlines()]
    names = ["a.csv", "b.csv", "with space é.csv"]
    assert [s.uri for s in got] == [f"{LOCATION}/data/{n}" for n in names]
    assert all(s.hash == adlsfs.source(MOUNT / "data" / n).hash for s, n in zip(got, names))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
