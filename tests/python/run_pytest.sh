#!/usr/bin/env bash
# CTest entry `python_binding`: pytest on tests/python against this build's libstreamdiff.so
# ($STREAMDIFF_LIBRARY) and CLI ($STREAMDIFF_CLI), with the package from python/ of this checkout.
# Uses the first of $STREAMDIFF_PYTHON, python3 on PATH, /usr/bin/python3 that can import pytest, numpy
# and PIL; skips (77) when none can (scripts/install-test-deps.sh installs python3-pytest python3-numpy
# python3-pil from Debian). Extra arguments go to pytest.
set -u
here=$(cd "$(dirname "$0")" && pwd)
for py in ${STREAMDIFF_PYTHON:-} python3 /usr/bin/python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import pytest, numpy, PIL' 2>/dev/null; then
        echo "python_binding: $("$py" -c 'import sys, pytest, numpy, PIL; print(sys.executable, "pytest", pytest.__version__, "numpy", numpy.__version__, "Pillow", PIL.__version__)')"
        exec "$py" -m pytest -q -p no:cacheprovider "$here" "$@"
    fi
done
echo "python_binding: SKIP: no python3 that imports pytest, numpy and PIL (apt-get install python3-pytest python3-numpy python3-pil, or scripts/install-test-deps.sh)"
exit 77
