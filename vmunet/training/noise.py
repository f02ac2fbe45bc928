"""Third-party notices that every ``vmunet fit|validate|test`` would print, silenced by name.

Each is matched by its exact text, so a new or different notice still shows:

* Lightning's adverts ("💡 Tip: ... install litlogger / litmodels"), logged at INFO on every
  ``Trainer`` start;
* torch's ``FutureWarning`` that ``LeafSpec`` is deprecated, raised from Lightning's own
  ``utilities/_pytree.py`` (not from our code: nothing here can change it).
"""

from __future__ import annotations

import logging
import warnings

ADVERT_PREFIX = "💡 Tip:"
# lightning_utilities' rank_zero_info logs through whichever of these Lightning set last
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class DropAdverts(logging.Filter):
    """Drops log records whose message starts with Lightning's advert prefix."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT_PREFIX)


def silence_lightning_notices() -> None:
    """Install the filters (idempotent)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropAdverts) for f in logger.filters):
            logger.addFilter(DropAdverts())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
