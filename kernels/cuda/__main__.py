"""``python -m wavegen.kernels.cuda --check``: the compile check (:mod:`wavegen.kernels.cuda.check`)."""

from wavegen.kernels.cuda.check import main
from wavegen.signals import end_program

end_program(main())
