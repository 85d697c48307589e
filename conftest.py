"""Run-wide test setup: the suite behaves the same however it was started."""

from __future__ import annotations

import signal

# A shell that starts the suite in the background (`bash scripts/test.sh &`) hands it SIGINT
# ignored, and every rsdchat a test starts would inherit that: its Ctrl-C tests would then wait
# for an interrupt that never comes. A handler (not SIG_IGN) is reset to the default in children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
