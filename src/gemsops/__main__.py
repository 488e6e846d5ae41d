"""``python -m gemsops log-summary FILE``: count the gems op calls in a record log."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemsops")
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("log-summary", help="print the number of calls per op in a record log")
    summary.add_argument("file")
    args = parser.parse_args(argv)
    from .runtime.oplog import summarize

    try:
        print(summarize(args.file))
    except OSError as err:
        print(f"gemsops: cannot read {args.file}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
