"""A pipeline step: a Source for every CSV input on the mount, passed on as JSON lines.

    python pipeline_step.py /mnt/data/inputs > inputs.jsonl
"""

import sys
from pathlib import Path

import adlsfs
from thds.core.source import serde


def inputs(directory: Path) -> list:
    # No file is downloaded: URI and hash come from the mount's extended attributes.
    return [adlsfs.source(path) for path in sorted(directory.glob("*.csv"))]


if __name__ == "__main__":
    for src in inputs(Path(sys.argv[1])):
        print(serde.to_json(src))  # {"uri": "adls://...", "size": ..., "xxh3_128b64": ...}
