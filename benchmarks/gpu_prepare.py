"""Build ``.gpu_carry/``: what the GPU check takes to the device machine (it has no internet).

* ``wheels/``: pydantic and its needs for the device's Python 3.12 (the trainer layer's
  settings schema; the device has no pydantic), the versions installed here;
* ``minilm_tokenizer/``: MiniLM's tokenizer files (``random:`` models read only these;
  the 90 MB of weights stay here), used through ``$BATCHMIXUP_MINILM_DIR``;
* ``data/<task>/``: the task's files from ``--data-dir`` (the ``../shared/data`` beside the
  checkout does not travel).

``.gpu_carry/`` is git-ignored and is named in the device call's ``carry``; then
``bash benchmarks/gpu_run.sh`` there runs ``benchmarks.gpu_check`` (docs/performance.md,
"The GPU check")::

    python -m benchmarks.gpu_prepare                     # here, in the checkout (seconds)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks._common import default_data_dir

CARRY = Path(".gpu_carry")
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection",
          "typing_extensions")
"""Carried for the device's Python: the schema's pydantic and what it requires."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json", "config.json")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def copy_tokenizer(dest: Path) -> Path:
    """MiniLM's tokenizer files (no weights) into ``dest``: a folder
    ``$BATCHMIXUP_MINILM_DIR`` can name for ``random:`` models."""
    from trainers.model import minilm_path

    source = minilm_path()
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, dest / name)
    return dest


def download_wheels(dest: Path, python_version: str) -> list[Path]:
    """The installed versions of :data:`WHEELS`, as binary wheels for the device."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--python-version", python_version, "--implementation",
           "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *specs], check=True)
    return sorted(dest.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(CARRY), help="default .gpu_carry")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--tasks", default="rte", help="comma-separated tasks to carry")
    parser.add_argument("--python-version", default="3.12", help="the device's Python")
    args = parser.parse_args(argv)
    out = Path(args.out)
    wheels = download_wheels(out / "wheels", args.python_version)
    copy_tokenizer(out / "minilm_tokenizer")
    for task in (t.strip() for t in args.tasks.split(",") if t.strip()):
        source = Path(args.data_dir) / task
        if not source.is_dir():
            parser.error(f"no folder {source} (--data-dir)")
        shutil.copytree(source, out / "data" / task, dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(wheels)} wheels, tokenizer, data {args.tasks}; {size / 2**20:.1f} MiB "
          "(the device call carries at most 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
