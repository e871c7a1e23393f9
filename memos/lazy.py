"""One lock for the heavy optional imports a server makes on first use (torch, sklearn).

Two threads importing them at once can each see the other's half-initialised module:
sklearn imports ``scipy.stats``, which probes ``sys.modules["torch"]`` while another
thread is still importing torch, and fails with "partially initialized module 'torch' has
no attribute 'Tensor'" (a 500 the CI fuzz found on ``GET …/structure/clusters`` while an
activation route loaded the bundled model). Every such first import runs under
:data:`IMPORT_LOCK`.
"""

from __future__ import annotations

import threading

__all__ = ["IMPORT_LOCK"]

#: Held while a heavy optional package is first imported (re-entrant: an import under the
#: lock may import another one).
IMPORT_LOCK = threading.RLock()
