"""Build hook: compile protos/ into the `ecert` package before setuptools collects packages.

The generated modules (`ecert/v1/*_pb2.py`, `*_pb2_grpc.py`, `*.pyi`) are build output: they are
ignored by git and re-made on every `pip install` / `pip install -e .`, so they can never drift
from the .proto files.
"""
from __future__ import annotations

import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent.resolve()
PROTO_ROOT = ROOT / "protos"
OUT = ROOT  # `protos/ecert/v1/x.proto` becomes the module `ecert.v1.x_pb2`


def compile_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not sources:
        raise SystemExit("no .proto files under protos/")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every generated directory is a regular package so that setuptools finds it.
    for directory in {(OUT / s).parent for s in sources}:
        while directory != OUT:
            (directory / "__init__.py").touch()
            directory = directory.parent
    (OUT / "ecert" / "py.typed").touch()


compile_protos()
setup()
