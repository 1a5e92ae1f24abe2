"""`python -m edgepack.device verify BUNDLE ...`: the device command, kept at this stable name
for devices and scripts. The runner itself is `edgepack.verification.device`."""

import sys

from .verification.device import main

if __name__ == "__main__":
    sys.exit(main())
