"""Multi-granularity memory: derived units, GMM association/clustering, the routed index.

Import the pieces from their modules (``memos.granularity.index.GranularIndex`` …); this
package file does no work at import time.
"""
