"""The parquet trajectory store: typed round trips, atomic appends, refusals with clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import adaptscope
from adaptscope.track import rundir, schema
from adaptscope.track.store import (
    TrajectoryError,
    append_rows,
    find_trajectory_files,
    load_trajectories,
    read_metadata,
    recorded_iterations,
)

CONFIG = {"method": "tgan", "seed": 0, "lr": 0.002}
PROTOCOL = {"fid_backbone": "inception", "fid_n_gen": 5000}


def row(iteration: int, run_id: str = "r0", **overrides) -> dict:
    base = {
        "run_id": run_id,
        "method": "tgan",
        "source": "ffhq",
        "target": "babies",
        "shots": 10,
        "seed": 0,
        "iteration": iteration,
        "images_seen": iteration * 4,
        "wall_time_s": iteration * 0.1,
        "fid": 200.0 - iteration / 100,
        "fid_backbone": "inception",
        "fid_n_gen": 5000,
        "realism_pt": 0.5,
        "intra_lpips": 0.6 - iteration / 10000,
        "intra_lpips_std": 0.01,
        "lpips_backbone": "vgg",
        "nearest_shot_lpips": 0.4,
    }
    base.update(overrides)
    return base


def new_run(root: Path, name: str = "r0") -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    return run_dir


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    run_dir = new_run(tmp_path)
    rows = [row(500, gt_coverage=0.7), row(0, fid=None, fid_backbone=None, fid_n_gen=None)]
    append_rows(run_dir, rows, config=CONFIG, protocol=PROTOCOL)

    df = load_trajectories(run_dir)
    expected = {**schema.COLUMNS, "gt_coverage": "float64"}
    assert list(df.columns) == list(expected)
    assert {c: str(df[c].dtype) for c in df.columns} == {
        c: ("string" if d == "string" else d) for c, d in expected.items()
    }
    assert list(df["iteration"]) == [0, 500]  # sorted, not in append order
    assert pd.isna(df.loc[0, "fid"]) and pd.isna(df.loc[0, "fid_n_gen"])
    assert pd.isna(df.loc[0, "fid_backbone"])
    assert df.loc[1, "fid_n_gen"] == 5000
    assert df.loc[1, "intra_lpips"] == pytest.approx(0.55)
    assert pd.isna(df.loc[0, "gt_coverage"]) and df.loc[1, "gt_coverage"] == pytest.approx(0.7)
    assert df.attrs["run_dirs"] == {"r0": str(run_dir)}

    table = pq.read_table(run_dir / rundir.TRAJECTORY_FILE)
    assert table.column("fid").null_count == 1  # missing metrics are nulls, not NaN
    meta = read_metadata(run_dir)
    assert meta["config"] == CONFIG and meta["protocol"] == PROTOCOL
    assert meta["version"] == adaptscope.__version__
    assert meta["schema"] == schema.SCHEMA_VERSION


def test_package_exports_the_loader():
    assert adaptscope.load_trajectories is load_trajectories


def test_nan_metric_is_stored_as_null(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0, fid=float("nan"))], config=CONFIG, protocol=PROTOCOL)
    assert pq.read_table(run_dir / rundir.TRAJECTORY_FILE).column("fid").null_count == 1


def test_appends_accumulate_and_report_recorded_iterations(tmp_path):
    run_dir = new_run(tmp_path)
    assert recorded_iterations(run_dir) == set()
    append_rows(run_dir, [row(0)], config=CONFIG, protocol=PROTOCOL)
    append_rows(run_dir, [row(500), row(1000)], config=CONFIG, protocol=PROTOCOL)
    assert recorded_iterations(run_dir) == {0, 500, 1000}
    assert len(load_trajectories(run_dir)) == 3


def test_identical_duplicate_is_skipped_and_different_one_refused(tmp_path):
    run_dir = new_run(tmp_path)
    path = run_dir / rundir.TRAJECTORY_FILE
    append_rows(run_dir, [row(0), row(500)], config=CONFIG, protocol=PROTOCOL)
    before = path.read_bytes()

    append_rows(run_dir, [row(500)], config=CONFIG, protocol=PROTOCOL)
    assert path.read_bytes() == before

    append_rows(run_dir, [row(500), row(1000)], config=CONFIG, protocol=PROTOCOL)
    assert list(load_trajectories(run_dir)["iteration"]) == [0, 500, 1000]

    before = path.read_bytes()
    with pytest.raises(TrajectoryError, match="iteration 500 is already recorded"):
        append_rows(run_dir, [row(500, fid=1.0)], config=CONFIG, protocol=PROTOCOL)
    assert path.read_bytes() == before


def test_duplicate_iteration_within_one_batch_is_refused(tmp_path):
    run_dir = new_run(tmp_path)
    with pytest.raises(TrajectoryError, match="iteration 0"):
        append_rows(run_dir, [row(0), row(0, fid=3.0)], config=CONFIG, protocol=PROTOCOL)
    assert not (run_dir / rundir.TRAJECTORY_FILE).exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"fid": "high"}, "'fid' must be a number"),
        ({"images_seen": 1.5}, "'images_seen' must be an integer"),
        ({"seed": None}, "'seed' must have a value"),
        ({"method": 3}, "'method' must be a string"),
        ({"extra_note": "text"}, "'extra_note' must be a number"),
    ],
)
def test_values_of_the_wrong_type_are_refused(tmp_path, bad, message):
    run_dir = new_run(tmp_path)
    with pytest.raises(TrajectoryError, match=message):
        append_rows(run_dir, [row(0, **bad)], config=CONFIG, protocol=PROTOCOL)


def test_missing_required_column_is_refused(tmp_path):
    run_dir = new_run(tmp_path)
    incomplete = row(0)
    del incomplete["target"]
    with pytest.raises(TrajectoryError, match="target"):
        append_rows(run_dir, [incomplete], config=CONFIG, protocol=PROTOCOL)


def test_protocol_change_and_second_run_id_are_refused(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0)], config=CONFIG, protocol=PROTOCOL)
    with pytest.raises(TrajectoryError, match="protocol differs"):
        append_rows(run_dir, [row(500)], config=CONFIG, protocol={"fid_n_gen": 10})
    with pytest.raises(TrajectoryError, match="one run directory holds one run"):
        append_rows(run_dir, [row(500, run_id="other")], config=CONFIG, protocol=PROTOCOL)
    assert recorded_iterations(run_dir) == {0}


def test_failed_replace_leaves_old_file_intact_and_no_temporaries(tmp_path, monkeypatch):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0), row(500)], config=CONFIG, protocol=PROTOCOL)
    before = (run_dir / rundir.TRAJECTORY_FILE).read_bytes()

    def crash(src, dst):
        raise OSError("disk pulled")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(TrajectoryError, match="disk pulled"):  # naming the file, kept intact
        append_rows(run_dir, [row(1000)], config=CONFIG, protocol=PROTOCOL)
    monkeypatch.undo()

    assert (run_dir / rundir.TRAJECTORY_FILE).read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.TRAJECTORY_FILE,
                                                         rundir.TRAJECTORY_FILE + ".prev"]
    assert recorded_iterations(run_dir) == {0, 500}


def test_writer_killed_mid_write_leaves_earlier_rows_readable(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0), row(500)], config=CONFIG, protocol=PROTOCOL)
    before = load_trajectories(run_dir)

    # The child writes the new file completely, then stops just before the rename and is killed.
    child = textwrap.dedent(
        """
        import json, os, sys, time
        from adaptscope.track import store
        def stall(src, dst):
            print("writing", flush=True)
            time.sleep(60)
        os.replace = stall
        template = json.loads(sys.argv[2])
        rows = [dict(template, iteration=i, images_seen=i * 4) for i in range(1000, 40000, 500)]
        store.append_rows(sys.argv[1], rows, config={}, protocol=json.loads(sys.argv[3]))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(run_dir), json.dumps(row(0)), json.dumps(PROTOCOL)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        temporaries = [p for p in run_dir.iterdir() if p.name != rundir.TRAJECTORY_FILE]
        assert temporaries  # the new table exists on disk but is not yet the trajectory
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    pd.testing.assert_frame_equal(load_trajectories(run_dir), before)
    append_rows(run_dir, [row(1000)], config=CONFIG, protocol=PROTOCOL)
    assert recorded_iterations(run_dir) == {0, 500, 1000}
    assert sorted(p.name for p in run_dir.iterdir()) == [rundir.TRAJECTORY_FILE,
                                                         rundir.TRAJECTORY_FILE + ".prev"]


def test_reader_during_appends_always_sees_a_whole_table(tmp_path):
    # A notebook polling a live run reads while the tracker replaces the file; every read must
    # see one complete version, never a mix of the old file's size and the new file's bytes.
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0)], config=CONFIG, protocol=PROTOCOL)
    writer = textwrap.dedent(
        """
        import json, sys
        from adaptscope.track import store
        template = json.loads(sys.argv[2])
        for i in range(1, 151):
            row = dict(template, iteration=i, images_seen=i * 4)
            store.append_rows(sys.argv[1], [row], config={}, protocol=json.loads(sys.argv[3]))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(run_dir), json.dumps(row(0)), json.dumps(PROTOCOL)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    counts = []
    try:
        while proc.poll() is None:
            counts.append(len(load_trajectories(run_dir)))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert len(set(counts)) > 10  # the reads really overlapped many of the writes
    assert counts == sorted(counts)
    assert len(load_trajectories(run_dir)) == 151


def test_parquet_without_adaptscope_metadata_is_refused(tmp_path):
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame([row(0)]).to_parquet(foreign)
    with pytest.raises(TrajectoryError, match="not an adaptscope trajectory") as info:
        load_trajectories(foreign)
    assert str(foreign) in str(info.value)
    with pytest.raises(TrajectoryError, match="not an adaptscope trajectory"):
        read_metadata(foreign)


def test_parquet_missing_required_columns_is_refused(tmp_path):
    partial = tmp_path / "run" / rundir.TRAJECTORY_FILE
    partial.parent.mkdir()
    table = pa.Table.from_pylist([{"run_id": "x", "iteration": 0}])
    table = table.replace_schema_metadata({schema.META_SCHEMA: schema.SCHEMA_VERSION})
    pq.write_table(table, partial)
    with pytest.raises(TrajectoryError, match="lacks required column") as info:
        load_trajectories(partial.parent)
    assert str(partial) in str(info.value)


def test_directory_of_runs_and_lists(tmp_path):
    for name in ("b", "a", "nested/c"):
        run_dir = new_run(tmp_path / "runs", name)
        append_rows(
            run_dir,
            [row(500, run_id=name), row(0, run_id=name)],
            config=CONFIG,
            protocol=PROTOCOL,
        )
    runs = tmp_path / "runs"

    df = load_trajectories(runs)
    assert list(zip(df["run_id"], df["iteration"], strict=True)) == [
        ("a", 0), ("a", 500), ("b", 0), ("b", 500), ("nested/c", 0), ("nested/c", 500),
    ]
    assert set(df.attrs["run_dirs"]) == {"a", "b", "nested/c"}

    listed = load_trajectories([runs / "a", str(runs / "nested" / "c" / rundir.TRAJECTORY_FILE)])
    assert sorted(listed["run_id"].unique()) == ["a", "nested/c"]
    # the same run reached twice is read once
    assert len(find_trajectory_files([runs, runs / "a"])) == 3


def test_extra_columns_are_united_across_runs(tmp_path):
    a, b = new_run(tmp_path, "a"), new_run(tmp_path, "b")
    append_rows(a, [row(0, run_id="a", gt_coverage=0.5)], config=CONFIG, protocol=PROTOCOL)
    append_rows(b, [row(0, run_id="b")], config=CONFIG, protocol=PROTOCOL)
    df = load_trajectories(tmp_path)
    assert df["gt_coverage"].dtype == "float64"
    assert df.set_index("run_id")["gt_coverage"].isna().to_dict() == {"a": False, "b": True}


def test_same_run_in_two_places_is_refused(tmp_path):
    for name in ("copy1", "copy2"):
        append_rows(new_run(tmp_path, name), [row(0)], config=CONFIG, protocol=PROTOCOL)
    with pytest.raises(TrajectoryError, match="also recorded"):
        load_trajectories(tmp_path)


def test_paths_without_trajectories_are_named_in_the_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrajectoryError, match="no trajectory.parquet found") as info:
        load_trajectories(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(TrajectoryError, match="no such file"):
        load_trajectories(tmp_path / "missing")
    with pytest.raises(TrajectoryError, match="no paths"):
        load_trajectories([])


def test_config_is_json_in_the_parquet_metadata(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0)], config={"path": Path("/x")}, protocol=PROTOCOL)
    raw = pq.read_schema(run_dir / rundir.TRAJECTORY_FILE).metadata
    assert json.loads(raw[schema.META_CONFIG.encode()]) == {"path": "/x"}


# --- schema versions and the evaluation column -------------------------------------------------


def as_schema_1(run_dir: Path) -> None:
    """Rewrite a trajectory as adaptscope wrote it before the `evaluation` column existed."""
    path = run_dir / rundir.TRAJECTORY_FILE
    table = pq.read_table(path)
    meta = {**table.schema.metadata, schema.META_SCHEMA.encode(): b"1"}
    table = table.drop_columns(["evaluation"]).replace_schema_metadata(meta)
    pq.write_table(table, path)


def test_rows_say_which_evaluation_they_are_and_full_is_the_default(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0), row(250, evaluation="cheap", fid=None, intra_lpips=None),
                          row(500, evaluation="full")], config=CONFIG, protocol=PROTOCOL)
    df = load_trajectories(run_dir)
    assert df["evaluation"].tolist() == ["full", "cheap", "full"]
    assert str(df["evaluation"].dtype) == "string"
    assert load_trajectories(run_dir, evaluation="full")["iteration"].tolist() == [0, 500]
    assert load_trajectories(run_dir, evaluation="cheap")["iteration"].tolist() == [250]
    assert read_metadata(run_dir)["schema"] == schema.SCHEMA_VERSION
    with pytest.raises(TrajectoryError, match="'evaluation' must be one of"):
        append_rows(run_dir, [row(750, evaluation="quick")], config=CONFIG, protocol=PROTOCOL)
    with pytest.raises(TrajectoryError, match="'evaluation' must have a value"):
        append_rows(run_dir, [row(750, evaluation=None)], config=CONFIG, protocol=PROTOCOL)


def test_a_schema_2_trajectory_reads_the_protocol_and_new_metrics_as_null(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0), row(500)], config=CONFIG, protocol=PROTOCOL)
    path = run_dir / rundir.TRAJECTORY_FILE
    table = pq.read_table(path)
    added = [c for c, version in schema.ADDED_IN.items() if version == 3]
    meta = {**table.schema.metadata, schema.META_SCHEMA.encode(): b"2"}
    pq.write_table(table.drop_columns(added).replace_schema_metadata(meta), path)

    df = load_trajectories(run_dir)
    assert list(df.columns) == list(schema.COLUMNS)
    assert df[added].isna().all().all()
    assert str(df["protocol"].dtype) == "string"
    append_rows(run_dir, [row(1000)], config=CONFIG, protocol=PROTOCOL)
    assert read_metadata(run_dir)["schema"] == schema.SCHEMA_VERSION
    assert load_trajectories(run_dir)["iteration"].tolist() == [0, 500, 1000]


def test_a_schema_1_trajectory_loads_as_full_evaluations_and_takes_new_rows(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0), row(500)], config=CONFIG, protocol=PROTOCOL)
    as_schema_1(run_dir)
    assert read_metadata(run_dir)["schema"] == "1"
    assert "evaluation" not in pq.read_schema(run_dir / rundir.TRAJECTORY_FILE).names

    df = load_trajectories(run_dir)
    assert list(df.columns) == list(schema.COLUMNS)
    assert df["evaluation"].tolist() == ["full", "full"]
    assert recorded_iterations(run_dir) == {0, 500}
    # A run resumed with this version appends to it: the table is rewritten as version 2.
    append_rows(run_dir, [row(500), row(1000)], config=CONFIG, protocol=PROTOCOL)
    assert read_metadata(run_dir)["schema"] == schema.SCHEMA_VERSION
    assert load_trajectories(run_dir)["evaluation"].tolist() == ["full"] * 3


def test_an_unknown_schema_version_is_refused(tmp_path):
    run_dir = new_run(tmp_path)
    append_rows(run_dir, [row(0)], config=CONFIG, protocol=PROTOCOL)
    path = run_dir / rundir.TRAJECTORY_FILE
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(
        {**table.schema.metadata, schema.META_SCHEMA.encode(): b"9"}), path)
    with pytest.raises(TrajectoryError, match="schema version '9'.*reads versions '1', '2'"):
        load_trajectories(run_dir)
