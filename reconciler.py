#!/usr/bin/env python3
"""kubelet-endpoints-reconciler: keep the kubelet Service, Endpoints and
EndpointSlices correct (Ready nodes only, every IP exactly once), then exit.

Run once per minute by a CronJob, or by hand; see README.md and ``--help``.
The exit code is the contract alerting routes on (lib/exitcodes.py).
"""

import sys

from lib.run import main

if __name__ == "__main__":
    sys.exit(main())
