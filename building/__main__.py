"""`python -m building build|eval|export-onnx`: build the artifacts from data/, evaluate them, export the encoder."""

import argparse
import json
import sys
from pathlib import Path

from building import builder, contract, versions
from building.encoders import ModelError
from building.files import pasteable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m building", description="Build and evaluate what the pipeline runs on.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the artifacts recipe.py declares from data/ and print the evaluation")
    commands.add_parser("eval", help="the pipeline's accuracy and macro-F1 on the first of model.LABELLED_SETS")
    export = commands.add_parser("export-onnx", help="export the embedding model to ONNX into DIR (the build runs this)")
    export.add_argument("dir", type=Path)
    export.add_argument("--int8", action="store_true", help="static int8 quantization, calibrated on recipe.calibration_texts")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = builder.build_artifacts()
            first = next(iter(contract.labelled_sets()), None)
            print(json.dumps(manifest[first] if first else {"artifacts": sorted(manifest["artifacts"])}, indent=2))
        elif args.command == "eval":
            builder.ready()
            print(json.dumps(builder.evaluate(), indent=2))
        else:
            builder.export_onnx(args.dir, args.int8)
    except (ModelError, versions.VersionError, contract.ContractError) as error:
        sys.exit(pasteable(str(error)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
