#!/usr/bin/env bash
# Install wavegen (editable, with the dev, cuda and analysis extras) and the tested torch 2.11.0 into the current
# Python. Skips whatever is already installed, so it is cheap to rerun.
#
#   bash recipes/setup.sh            (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
py=${PYTHON:-python3}

if "$py" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.11.0')" 2>/dev/null; then
  echo "setup: torch 2.11.0 already installed"
else
  echo "setup: installing torch 2.11.0 (the tested version; a large download the first time)"
  "$py" -m pip install --quiet "torch==2.11.0"
fi

# The editable install must point at THIS checkout (another clone may have been installed before).
if (cd /tmp && "$py" -c "
import sys, wavegen, wavegen.kernels, numba, numba_cuda, greenlet, accelerate, soundfile, soxr, safetensors, tensorboard, tqdm, pytest, xdist, matplotlib, aiohttp, playwright, librosa, scipy
sys.exit(not (wavegen.__file__.startswith(sys.argv[1]) and wavegen.kernels.__file__.startswith(sys.argv[1])))
" "$repo/") 2>/dev/null && command -v wavegen >/dev/null; then
  echo "setup: wavegen already installed from $repo"
else
  echo "setup: pip install -e \".[dev,cuda,analysis]\""
  "$py" -m pip install --quiet -e ".[dev,cuda,analysis]"
fi

# The serve page's browser test (tests/test_serve_browser.py) drives Debian's headless Chromium
# through Playwright (installed above with the dev extra); Playwright's own browser download is
# not used.
if command -v chromium >/dev/null 2>&1; then
  echo "setup: chromium already installed"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: apt-get install chromium (for the serve page's browser test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "setup: no chromium, and no apt-get as root to install it: the browser test will be skipped"
fi
