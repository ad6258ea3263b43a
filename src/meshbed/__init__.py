"""meshbed: a testbed and conformance suite for Envoy service meshes."""

__version__ = "0.1.0"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    import os
    os.write(2, b"meshbed: interrupted\n")
    os._exit(130)


def _one_line_interrupts_from_the_start() -> None:
    """Ctrl-C while the `meshbed` command is still importing: one line, not a traceback from inside an import.

    Here, the first module of the package the console script imports, so the window is as small as it can be
    (meshbed.cli takes over once imported). Only as the program itself, never over an inherited SIG_IGN."""
    import os
    import signal
    import sys
    if os.path.basename(sys.argv[0] if sys.argv else "") == "meshbed" \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


_one_line_interrupts_from_the_start()
