"""Reading exports back with the viewers' own code: TensorBoard's EventAccumulator, and W&B's
protobuf records from an offline run's `.wandb` transaction log.

The `.wandb` file is a LevelDB-style log (a 7-byte header `:W&B`, magic 0xBEE1, version; then
32 KiB blocks of records, each with a CRC-32, a length and a FULL / FIRST / MIDDLE / LAST type);
every record is a `wandb_internal_pb2.Record`, decoded here by wandb itself. The framing is read
with each record's checksum verified, so a torn or misread log fails instead of passing.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")
_RECORD = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def tensorboard_events(folder: Path):
    """Every event of a run's TensorBoard folder, as logged (duplicated steps are kept, not
    purged the way TensorBoard's viewer would after a restart)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0},
                                   purge_orphaned_data=False)
    accumulator.Reload()
    return accumulator


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] in the order written."""
    acc = tensorboard_events(folder)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_images(folder: Path, tag: str = "samples") -> list[tuple[int, np.ndarray]]:
    """[(step, H x W x 3 uint8 image)] of an image tag, decoded from the stored PNGs."""
    import io

    from PIL import Image

    acc = tensorboard_events(folder)
    if tag not in acc.Tags()["images"]:
        return []
    return [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
            for e in acc.Images(tag)]


def wandb_records(path: Path) -> list[Any]:
    """The records of one `.wandb` transaction log, decoded with wandb's protobuf types."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = _HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    pos, payloads, pending = _HEADER.size, [], b""
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # a block's zero trailer
            pos += left
            continue
        checksum, length, kind = _RECORD.unpack_from(data, pos)
        chunk = data[pos + _RECORD.size:pos + _RECORD.size + length]
        assert checksum == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), f"{path}: bad CRC"
        pos += _RECORD.size + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            payloads.append(pending + chunk)
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def _items(items) -> dict[str, Any]:
    """History / config items as a dict: `nested_key` paths become nested dicts."""
    out: dict[str, Any] = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def wandb_offline_runs(root: Path, run_id: str) -> list[dict[str, Any]]:
    """Every offline run folder of `run_id` under `root/wandb/`, in the order they started:
    its folder, run record (id, name, config) and history as [(step, values)]."""
    runs = []
    for folder in sorted((root / "wandb").glob("offline-run-*")):
        log = folder / f"run-{run_id}.wandb"
        if folder.is_symlink() or not log.is_file():
            continue
        records = wandb_records(log)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config = {k: v for k, v in _items(run.config.update).items() if k != "_wandb"}
        history = [(r.history.step.num, {k: v for k, v in _items(r.history.item).items()
                                         if not k.startswith("_")})
                   for r in records if r.WhichOneof("record_type") == "history"]
        started = run.start_time.seconds + run.start_time.nanos * 1e-9
        runs.append({"folder": folder, "id": run.run_id, "name": run.display_name,
                     "project": run.project, "group": run.run_group, "config": config,
                     "history": history, "started": started,
                     "finished": any(r.WhichOneof("record_type") == "exit" for r in records)})
    return sorted(runs, key=lambda r: r["started"])
