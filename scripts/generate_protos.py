"""Regenerate the ``*_pb2.py`` modules under src/modelserve/proto from the ``.proto`` files there.

Run after editing a .proto: ``python scripts/generate_protos.py`` (needs ``grpcio-tools``). The generated
modules are committed so installing modelserve needs no protobuf compiler. Each module is rewritten to
register in ``modelserve.proto.POOL`` instead of protobuf's default pool, so our copies of TensorFlow's
messages never clash with TensorFlow's own when both are imported.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO_ROOT = SRC / "modelserve" / "proto"


def main() -> int:
    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(SRC)) for p in PROTO_ROOT.rglob("*.proto"))
    for proto in protos:
        args = ["protoc", f"-I{SRC}", f"-I{include}", f"--python_out={SRC}", f"--pyi_out={SRC}"]
        if proto.endswith("_service.proto"):
            args.append(f"--grpc_python_out={SRC}")
        if protoc.main([*args, proto]) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
    for module in PROTO_ROOT.rglob("*_pb2.py"):
        text = module.read_text()
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            "from modelserve.proto import POOL as _POOL\n",
        )
        text = re.sub(r"_descriptor_pool\.Default\(\)", "_POOL", text)
        module.write_text(text)
    print(f"generated {len(protos)} proto modules under {PROTO_ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
