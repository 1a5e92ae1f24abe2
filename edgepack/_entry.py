"""The `edgepack` console script.

The full CLI needs typer, rich and pydantic. On a device that has only numpy and one
runtime (edgepack installed with `pip install --no-deps`), `edgepack verify` still works:
it is the device runner, which needs nothing else.
"""

import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except ImportError as exc:
        argv = sys.argv[1:]
        if argv[:1] == ["verify"]:
            from .device import main as device_main

            sys.exit(device_main(argv))
        sys.stderr.write(f"edgepack: the full command line needs {exc.name} (pip install edgepack); "
                         "here only `edgepack verify BUNDLE [--target T] [--json OUT]` is available\n")
        sys.exit(2)
    cli_main()
