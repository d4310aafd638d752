"""`python -m imagegw_dev.emulator`: run the upstream emulator (a test double) until Ctrl-C."""

from imagegw_dev.emulator.server import main

raise SystemExit(main())
