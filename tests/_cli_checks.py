"""What the command-line tests share: the one-line error check, image folders, a lock holder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from adaptscope.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[1]


def one_error(result, code: int = EXIT_BAD_INPUT) -> str:
    """The one `error:` line of a failed command: nothing else on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and result.stderr.strip() == lines[0], result.stderr
    return lines[0]


def write_pngs(folder: Path, n: int, size: int = 16) -> Path:
    """`n` seeded random RGB images of `size` px in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"img{i:03d}.png")
    return folder


def hold_lock(folder: Path) -> subprocess.Popen:
    """A second process that takes the folder's lock and holds it until killed."""
    code = textwrap.dedent(f"""
        import time
        from adaptscope.track.rundir import RunDir
        with RunDir({str(folder)!r}).lock():
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "locked"
    return proc
