"""``python -m modelserve.gateway HANDLER [flags]``: the same as ``modelserve gateway HANDLER [flags]``."""

import argparse
import sys

from modelserve.gateway.command import add_gateway_parser, run_gateway


def main() -> int:
    """Parse ``sys.argv`` as the ``gateway`` subcommand's arguments and run it."""
    parser = argparse.ArgumentParser(prog="modelserve")
    add_gateway_parser(parser.add_subparsers(dest="command"))
    return run_gateway(parser.parse_args(["gateway", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
