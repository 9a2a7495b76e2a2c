"""``python -m wavegen.kernels.cuda --check``: the compile check (:mod:`wavegen.kernels.cuda.check`)."""

import sys

from wavegen.kernels.cuda.check import main

sys.exit(main())
