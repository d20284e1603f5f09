"""Engines, transactions and the schema check: the one place that talks to the database driver.

`Database.session()` is the single transaction helper: it commits, rolls back, and translates
driver errors into the tuner's own (`StorageUnavailableError` for a database that is down or
locked, which callers may retry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tuner.domain.entities import JournalEntry
from tuner.domain.errors import SchemaOutdatedError, StorageUnavailableError, TunerError, first_line

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
VERSION_TABLE = "tuner_alembic_version"
UPGRADE_HINT = "run `tuner db upgrade` (with the same TUNER_DATABASE_URL)"

T = TypeVar("T")
JournalListener = Callable[[JournalEntry], None]
#: Where a transaction keeps the journal events it wrote (`Session.info`) until its commit.
JOURNAL_KEY = "tuner.journal"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalize_url(url: str) -> str:
    """Prefer psycopg 3 for PostgreSQL URLs given without a driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_db_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """An engine with the settings each backend needs for several writers.

    `pre_ping=False` (a study manager's engines): no round trip to PostgreSQL at every checkout
    (about 18 a trial). A connection the server dropped then fails its first statement, the
    manager treats that as the database being unavailable and retries at its next tick, and
    SQLAlchemy discards every pooled connection older than the failure. The API keeps the
    ping: a request after an outage should not be the one that finds the dead connection.
    """
    url = normalize_url(url)
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_size=5,
        max_overflow=10,
        connect_args={"options": POSTGRES_SESSION_OPTIONS},
    )


#: A session never waits long for a row lock, and one left idle inside a transaction (its
#: process paused by SIGSTOP, or frozen) is ended by the server, releasing its locks: otherwise
#: one paused manager would freeze the others in the middle of a tick, past their own leases.
POSTGRES_SESSION_OPTIONS = "-c lock_timeout=1000 -c idle_in_transaction_session_timeout=5000"


def optuna_engine_kwargs(url: str, *, pre_ping: bool = True) -> dict[str, Any]:
    if is_sqlite(url):
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": pre_ping, "connect_args": {"options": POSTGRES_SESSION_OPTIONS}}


def tune_optuna_engine(engine: Engine, url: str) -> None:
    """On SQLite, Optuna's connections commit as ours do: `synchronous=NORMAL` (safe in WAL
    mode, which the file is in: a power cut may lose the last commits, never corrupt the
    file); `FULL`, SQLite's default, syncs at every commit, and Optuna commits 8 times a trial.
    Connections the storage already opened are closed, so that every one gets the pragma."""
    if not is_sqlite(url):
        return

    @event.listens_for(engine, "connect")
    def _optuna_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    engine.dispose()


class Database:
    """The tuner's tables in one database (which may also hold Optuna's)."""

    def __init__(self, url: str, *, pre_ping: bool = True) -> None:
        self.url = normalize_url(url)
        self.engine = create_db_engine(self.url, pre_ping=pre_ping)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._journal_listeners: list[JournalListener] = []

    def listen(self, listener: JournalListener) -> Callable[[], None]:
        """Call `listener` with each journal event this process commits, after its commit
        (the one event path: what the API's event stream serves, as it is written). Returns
        the function that stops listening."""
        self._journal_listeners.append(listener)
        return lambda: self._journal_listeners.remove(listener)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on error, translate driver errors."""
        session = self._sessions()
        committed: list[JournalEntry] = []
        try:
            yield session
            session.commit()
            committed = session.info.pop(JOURNAL_KEY, [])
        except TunerError:
            session.rollback()
            raise
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if _is_unavailable(exc):
                raise StorageUnavailableError(f"database unavailable: {_first_line(exc)}") from exc
            raise
        except SQLAlchemyError:
            session.rollback()
            raise
        finally:
            session.close()
        if committed:
            self._tell_listeners(committed)

    def _tell_listeners(self, entries: list[JournalEntry]) -> None:
        for listener in list(self._journal_listeners):
            for entry in entries:
                try:
                    listener(entry)
                except Exception:  # a broken listener must not stop trials
                    logger.exception("journal listener failed")

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction."""
        with self.session() as session:
            return work(session)

    def retrying(
        self, work: Callable[[Session], T], *, attempts: int = 5, backoff: float = 0.5
    ) -> T:
        """Run `work`, retrying while the database is unavailable (with exponential backoff)."""
        for attempt in range(attempts):
            try:
                return self.run(work)
            except StorageUnavailableError:
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")

    def ping(self) -> None:
        with self.session() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    def is_empty(self) -> bool:
        """Whether none of the tuner's tables exist yet."""
        with self.engine.connect() as conn:
            names = inspect(conn).get_table_names()
        return not any(name.startswith("tuner_") for name in names)

    def check_schema(self) -> None:
        """Refuse to run against a schema other than the code's; the message says the fix."""
        head = head_revision()
        try:
            current = self.current_revision()
        except OperationalError as exc:
            raise StorageUnavailableError(f"database unavailable: {_first_line(exc)}") from exc
        if current == head:
            return
        if current is None:
            raise SchemaOutdatedError(f"the database has no tuner schema; {UPGRADE_HINT}")
        raise SchemaOutdatedError(
            f"the database schema is at revision {current}, this tuner needs {head}; {UPGRADE_HINT}"
        )

    def upgrade(self, revision: str = "head") -> None:
        """Apply the tuner's migrations."""
        from alembic import command

        command.upgrade(alembic_config(self.url), revision)

    def prepare(self, *, auto_init: bool = True) -> None:
        """Check the schema; a brand-new database (no tuner tables) is initialized in place."""
        if auto_init and self.is_empty():
            logger.info("initializing a new tuner schema in %s", _safe_url(self.url))
            self.upgrade()
        self.check_schema()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    if len(heads) != 1:
        raise SchemaOutdatedError(f"the tuner's migrations have {len(heads)} heads; expected one")
    return heads[0]


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) means the database is unreachable for now.

    Covers our own `StorageUnavailableError` and driver errors raised through Optuna's storage.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailableError):
            return True
        if isinstance(current, DBAPIError) and _is_unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_unavailable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    message = str(exc.orig).lower()
    signals = (
        "database is locked",
        "could not connect",
        "connection refused",
        "server closed the connection",
        "terminating connection",
        "connection is closed",
        "the database system is",
        "connection timed out",
        "consuming input failed",
        "ssl connection has been closed",
        "not currently accepting connections",
        "does not allow connections",
        "server closed",
        "connection failed",
        "lock timeout",
        "idle-in-transaction timeout",
    )
    return any(signal in message for signal in signals)


def _first_line(exc: BaseException) -> str:
    """The driver's own message (`orig`), first line."""
    return first_line(getattr(exc, "orig", None) or exc)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
