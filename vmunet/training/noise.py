"""Third-party notices that every ``vmunet fit|validate|test`` would print, silenced by name.

Each is matched by its exact text, so a new or different notice still shows:

* Lightning's adverts ("💡 Tip: ... install litlogger / litmodels"), logged at INFO on every
  ``Trainer`` start;
* torch's ``FutureWarning`` that ``LeafSpec`` is deprecated, raised from Lightning's own
  ``utilities/_pytree.py`` (not from our code: nothing here can change it).

And :class:`HeldNotices`: the info lines printed while a configuration is being built ("Seed set
to 42", "GPU available ..."), held back until it is known to be valid, so that a config error is
the only line a user sees.
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


SEED_LOGGER = "lightning.fabric.utilities.seed"  # seed_everything's "Seed set to N"


class HeldNotices(logging.Filter):
    """Holds the INFO (and DEBUG) records of ``names`` from now on (up to level ``upto``); warnings and
    errors pass.

    :meth:`release` prints the held records (original text and time) once the configuration has
    been built; :meth:`drop` prints them only at DEBUG level (``vmunet -v``), for a configuration
    that failed: its one-line error is then all a user sees. Either ends the holding.
    """

    def __init__(self, names: tuple[str, ...], upto: int = logging.INFO) -> None:
        super().__init__()
        self.names = names
        self.upto = upto  # the highest level held (``logging.WARNING``: warnings too)
        self.held: list[logging.LogRecord] = []
        for name in names:
            logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > self.upto:
            return True
        self.held.append(record)
        return False

    @property
    def active(self) -> bool:
        return any(self in logging.getLogger(name).filters for name in self.names)

    def _end(self, demote: bool) -> None:
        for name in self.names:
            logging.getLogger(name).removeFilter(self)
        held, self.held = self.held, []
        for record in held:
            logger = logging.getLogger(record.name)
            if demote:
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # handle() itself does not check the level. Demoted ones show with vmunet's debug output
            # (``-v`` turns DEBUG on for vmunet's loggers only, not for Lightning's), through vmunet's
            # handlers: Lightning's own console handler (on "lightning", not propagating) drops DEBUG
            shown = logging.getLogger("vmunet") if demote else logger
            if shown.isEnabledFor(record.levelno):
                shown.handle(record)

    def release(self) -> None:
        self._end(demote=False)

    def drop(self) -> None:
        self._end(demote=True)
