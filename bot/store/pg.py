"""PostgreSQL as the shared store of several replicas (SPEC §12): `IMAGEBOT_DB=postgresql://...`.

The rest of the core speaks one dialect of SQL through `db.conn.execute(sql, params)`: the subset that
SQLite and PostgreSQL share, with `?` placeholders. `PgDatabase` gives the same surface over one psycopg 3
connection (the ledger's database thread owns it, as it owns the SQLite connection), translating what differs:
`?` -> `%s`, `INSERT OR IGNORE` -> `ON CONFLICT DO NOTHING`, the column `user` (a reserved word there)
quoted, `BEGIN IMMEDIATE` -> `BEGIN`, and the marker `/*lock*/` -> `FOR UPDATE` (in SQLite a comment: there
`BEGIN IMMEDIATE` already makes a writer the only one).

Race-free reservations in one round trip: a reservation is one statement, `imagebot_reserve` (schema version
5, below), which locks the quota counters it checks (creating any missing one) always in the same order
(scope, key, period), so two reservations never deadlock and a second one that needs a counter waits for the
first to commit, then sees its rows (READ COMMITTED); it checks the pace and every limit and inserts the rows
in that one statement, so it holds its locks only as long as that. No two replicas can both pass a limit
only one fits. The counters follow the ledger by a trigger (`ledger_counters`), so a settlement is the state
machine's one conditional UPDATE (bot/store/jobstate.py), and its counters move in the same statement: two replicas
recovering the same row cannot both move them. Should PostgreSQL still abort a transaction (a deadlock, a
serialization failure), the ledger runs it again (`is_retryable`, a bounded number of times): no user ever
sees one. `PgConnection.round_trips` counts the statements sent (benchmarks/quota.py). Why psycopg 3: a plain
synchronous driver fits the ledger's one database thread per process, and its binary package needs no
compiler.

The schema is created at start (this backend's MIGRATIONS, each version's statements in PostgreSQL's own
dialect, sent untranslated), under an advisory lock so replicas starting together do not race.

psycopg is the optional `[postgres]` extra: this module imports it only when a PostgreSQL database is opened,
so a SQLite-only install never needs it. Without it, a PostgreSQL `IMAGEBOT_DB` is a configuration error
(`require_driver`, checked when the settings load: exit 2, one line).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError

if TYPE_CHECKING:
    import psycopg

MISSING_DRIVER = (
    "IMAGEBOT_DB is a PostgreSQL URL, but psycopg is not installed: pip install 'imagebot[postgres]'"
)

SCHEMA_VERSION = 6  # the versions of MIGRATIONS below
MIGRATION_LOCK = 72_710_001  # pg_advisory_xact_lock key for schema changes
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ledger (
        id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER, platform TEXT, workspace TEXT, channel TEXT,
        "user" TEXT, model TEXT, size TEXT, quality TEXT, format TEXT, prompt TEXT, status TEXT NOT NULL,
        reserved_micros BIGINT NOT NULL, actual_micros BIGINT NOT NULL DEFAULT 0, text_tokens BIGINT,
        image_tokens BIGINT, output_tokens BIGINT, request_ids TEXT, attempts INTEGER DEFAULT 0,
        latency_ms BIGINT, error TEXT, owner TEXT, day TEXT, month TEXT, created_at TEXT, updated_at TEXT,
        finished_at TEXT, context TEXT, notice TEXT, mode TEXT NOT NULL DEFAULT 'fast')""",
    "CREATE INDEX IF NOT EXISTS idx_ledger_job_id ON ledger (job_id)",
    "CREATE INDEX IF NOT EXISTS idx_ledger_channel_created_at ON ledger (channel, created_at)",
    'CREATE INDEX IF NOT EXISTS idx_ledger_user_created_at ON ledger ("user", created_at)',
    "CREATE INDEX IF NOT EXISTS idx_ledger_open ON ledger (status) WHERE status IN ('reserved', 'running')",
    """CREATE TABLE IF NOT EXISTS limits (scope TEXT, key TEXT, daily_micros BIGINT, daily_images BIGINT,
        monthly_micros BIGINT, monthly_images BIGINT, updated_at TEXT, PRIMARY KEY (scope, key))""",
    """CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at TEXT,
        heartbeat_at TEXT, expires_at TEXT)""",
    "CREATE TABLE IF NOT EXISTS seen_events (key TEXT PRIMARY KEY, at TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_seen_events_at ON seen_events (at)",
    """CREATE TABLE IF NOT EXISTS counters (scope TEXT NOT NULL, key TEXT NOT NULL, period TEXT NOT NULL,
        micros BIGINT NOT NULL, images BIGINT NOT NULL, PRIMARY KEY (scope, key, period))""",
    """CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, platform TEXT, workspace TEXT, channel TEXT,
        "user" TEXT, request TEXT NOT NULL, images TEXT NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_results_created_at ON results (created_at)",
    "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    """CREATE TABLE IF NOT EXISTS confirmations (token TEXT PRIMARY KEY, platform TEXT, workspace TEXT,
        channel TEXT, "user" TEXT, request TEXT NOT NULL, created_at TEXT NOT NULL, state TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS channel_settings (tenant TEXT, channel TEXT, name TEXT, value TEXT NOT NULL,
        PRIMARY KEY (tenant, channel, name))""",
    """CREATE TABLE IF NOT EXISTS tenant_settings (tenant TEXT, name TEXT, value TEXT NOT NULL,
        PRIMARY KEY (tenant, name))""",
    """CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, input_file_id TEXT,
        status TEXT NOT NULL, created_at TEXT NOT NULL, checked_at TEXT, finished_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS idx_batches_status ON batches (status)",
    """CREATE TABLE IF NOT EXISTS batch_lines (custom_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL,
        job_id TEXT NOT NULL, row_id BIGINT NOT NULL, state TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_batch_lines_batch_id ON batch_lines (batch_id)",
    """CREATE TABLE IF NOT EXISTS relax_jobs (job_id TEXT PRIMARY KEY, platform TEXT NOT NULL, workspace TEXT,
        channel TEXT, "user" TEXT, submitted_at TEXT NOT NULL, discard INTEGER DEFAULT 0, delivered_at TEXT)""",
]
# Version 2, the job state machine (bot/store/jobstate.py; SQLite's `_v9_jobstate`): paid images are rendered, then
# delivered (what was `succeeded`), their bytes kept in the outbox until then; overage flags a settlement above
# its reservation.
JOBSTATE = [
    "ALTER TABLE ledger ADD COLUMN IF NOT EXISTS overage INTEGER NOT NULL DEFAULT 0",
    "UPDATE ledger SET status='delivered' WHERE status='succeeded'",
    """CREATE TABLE IF NOT EXISTS outbox (row_id BIGINT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER,
        data BYTEA NOT NULL, width INTEGER, height INTEGER, format TEXT, elapsed_ms BIGINT, tries INTEGER,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_outbox_job_id ON outbox (job_id)",
    "CREATE INDEX IF NOT EXISTS idx_ledger_rendered ON ledger (status) WHERE status='rendered'",
]
# Version 3 (SQLite's `_v10_resources`): who holds each stored image, filled from the requests stored before.
RESOURCES = [
    "CREATE TABLE IF NOT EXISTS blob_refs (sha256 TEXT NOT NULL, holder TEXT NOT NULL, PRIMARY KEY (holder, sha256))",
    "CREATE INDEX IF NOT EXISTS idx_blob_refs_sha256 ON blob_refs (sha256)",
    'CREATE INDEX IF NOT EXISTS idx_confirmations_user_created_at ON confirmations ("user", created_at)',
    """INSERT INTO blob_refs (sha256, holder) SELECT ref->>'sha256', 'r:' || job_id FROM results,
        jsonb_array_elements(request::jsonb->'references') AS ref ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT request::jsonb->'mask'->>'sha256', 'r:' || job_id
        FROM results WHERE request::jsonb->'mask'->>'sha256' IS NOT NULL ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT ref->>'sha256', 'c:' || token FROM confirmations,
        jsonb_array_elements(request::jsonb->'references') AS ref ON CONFLICT DO NOTHING""",
    """INSERT INTO blob_refs (sha256, holder) SELECT request::jsonb->'mask'->>'sha256', 'c:' || token
        FROM confirmations WHERE request::jsonb->'mask'->>'sha256' IS NOT NULL ON CONFLICT DO NOTHING""",
]
# Version 4, batches with a key (bot/jobs/relax.py; SQLite's `_v11_relax` in bot/store/schema.py): `key` is the primary key,
# `id` (the API's) may be unknown while `submitting`, `owner` is the process sending it, file ids once seen; a
# line belongs to its batch by key.
RELAX_KEYS = [
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS key TEXT",
    "UPDATE batches SET key = id WHERE key IS NULL",
    "ALTER TABLE batches DROP CONSTRAINT IF EXISTS batches_pkey",
    "ALTER TABLE batches ALTER COLUMN id DROP NOT NULL",
    "ALTER TABLE batches ADD PRIMARY KEY (key)",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS owner TEXT",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS output_file_id TEXT",
    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS error_file_id TEXT",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_batches_id ON batches (id)",
    "ALTER TABLE batch_lines RENAME COLUMN batch_id TO batch_key",
    "DROP INDEX IF EXISTS idx_batch_lines_batch_id",
    "CREATE INDEX IF NOT EXISTS idx_batch_lines_batch_key ON batch_lines (batch_key)",
]
# Version 5, reservations in one round trip (bot/store/ledger.py; no SQLite counterpart: SQLite keeps its in-process
# code). The counters follow the ledger by a trigger: a row counts its reservation and one image while open
# (reserved, running, batched), its actual cost and one image if paid once closed, so any write of a row's
# status or amounts moves its four counters in the same statement (settlement is one UPDATE). A reservation is
# one call of `imagebot_reserve`: it locks the four counters in one fixed order (creating any missing one),
# checks the pace and every limit (the tenant's overrides, then the defaults it is given), and inserts the
# rows; a refusal comes back as data (which limit, what is used), and the caller words it (bot/policy/quota.py).
FAST_RESERVE = [
    """CREATE OR REPLACE FUNCTION imagebot_part(t text) RETURNS text LANGUAGE sql IMMUTABLE AS
        $$ SELECT replace(replace(coalesce(t, ''), '%', '%25'), ':', '%3A') $$""",
    """CREATE OR REPLACE FUNCTION imagebot_ledger_counters() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        dm bigint;
        di bigint;
        tenant text;
        who text;
        stage integer;
    BEGIN
        IF NEW.status IN ('reserved', 'running', 'batched') THEN
            dm := NEW.reserved_micros; di := 1;
        ELSE
            dm := NEW.actual_micros;
            di := CASE WHEN NEW.status IN ('rendered', 'delivered', 'undelivered') THEN 1 ELSE 0 END;
        END IF;
        IF TG_OP = 'UPDATE' THEN
            IF OLD.status IN ('reserved', 'running', 'batched') THEN
                dm := dm - OLD.reserved_micros; di := di - 1;
            ELSE
                dm := dm - OLD.actual_micros;
                di := di - CASE WHEN OLD.status IN ('rendered', 'delivered', 'undelivered') THEN 1 ELSE 0 END;
            END IF;
        END IF;
        IF (dm = 0 AND di = 0) OR NEW.day IS NULL OR NEW.month IS NULL THEN
            RETURN NULL;
        END IF;
        tenant := imagebot_part(NEW.platform) || ':' || imagebot_part(NEW.workspace);
        who := tenant || ':' || imagebot_part(NEW."user");
        -- The counters exist (the reservation made them): plain updates, in the order every writer takes.
        stage := 0;
        UPDATE counters SET micros = micros + dm, images = images + di
            WHERE scope = 'channel_month' AND key = tenant || ':' || imagebot_part(NEW.channel)
            AND period = NEW.month;
        IF FOUND THEN
            stage := 1;
            UPDATE counters SET micros = micros + dm, images = images + di
                WHERE scope = 'user_day' AND key = who AND period = NEW.day;
        END IF;
        IF FOUND THEN
            stage := 2;
            UPDATE counters SET micros = micros + dm, images = images + di
                WHERE scope = 'user_month' AND key = who AND period = NEW.month;
        END IF;
        IF FOUND THEN
            stage := 3;
            UPDATE counters SET micros = micros + dm, images = images + di
                WHERE scope = 'workspace_month' AND key = tenant AND period = NEW.month;
        END IF;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        -- One was missing (a row written before this version, say): it and the ones after it, upserted.
        INSERT INTO counters AS c (scope, key, period, micros, images)
            SELECT v.s, v.k, v.p, dm, di FROM (VALUES
                (1, 'channel_month', tenant || ':' || imagebot_part(NEW.channel), NEW.month),
                (2, 'user_day', who, NEW.day), (3, 'user_month', who, NEW.month),
                (4, 'workspace_month', tenant, NEW.month)) AS v(n, s, k, p)
            WHERE v.n > stage ORDER BY v.n
            ON CONFLICT (scope, key, period) DO UPDATE
                SET micros = c.micros + excluded.micros, images = c.images + excluded.images;
        RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS ledger_counters ON ledger",
    """CREATE TRIGGER ledger_counters AFTER INSERT OR UPDATE OF status, reserved_micros, actual_micros
        ON ledger FOR EACH ROW EXECUTE FUNCTION imagebot_ledger_counters()""",
    # Lock the counters of one requester in the order every writer takes them (scope, key, period), check the
    # pace (when max_jobs / since are given) and every limit for `need_m` / `need_i` more. `defaults`: the six
    # configured limits (user daily USD, daily images, monthly USD, monthly images, channel monthly USD,
    # workspace monthly USD), NULL for none; an override of -1 lifts one. `refused` names what refused.
    """CREATE OR REPLACE FUNCTION imagebot_admit(
        p_platform text, p_workspace text, p_user text, user_key text, channel_key text, tenant_key text,
        p_day text, p_month text, need_m bigint, need_i bigint, defaults bigint[], max_jobs bigint,
        since text, OUT refused text, OUT used bigint, OUT lim bigint, OUT last_at text)
    LANGUAGE plpgsql AS $$
    DECLARE
        cm bigint; ud_m bigint; ud_i bigint; um_m bigint; um_i bigint; wm bigint;
        lu record; lc record; lw record;
        lims bigint[];
        uses bigint[];
        needs bigint[];
        labels text[] := ARRAY['your daily spend', 'your daily images', 'your monthly spend',
            'your monthly images', 'this channel''s monthly spend', 'this workspace''s monthly spend'];
    BEGIN
        -- Lock the four counters (creating any missing one) in the order every writer takes them.
        SELECT c.micros INTO cm FROM counters c
            WHERE c.scope = 'channel_month' AND c.key = channel_key AND c.period = p_month FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO counters VALUES ('channel_month', channel_key, p_month, 0, 0) ON CONFLICT DO NOTHING;
            SELECT c.micros INTO cm FROM counters c
                WHERE c.scope = 'channel_month' AND c.key = channel_key AND c.period = p_month FOR UPDATE;
        END IF;
        SELECT c.micros, c.images INTO ud_m, ud_i FROM counters c
            WHERE c.scope = 'user_day' AND c.key = user_key AND c.period = p_day FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO counters VALUES ('user_day', user_key, p_day, 0, 0) ON CONFLICT DO NOTHING;
            SELECT c.micros, c.images INTO ud_m, ud_i FROM counters c
                WHERE c.scope = 'user_day' AND c.key = user_key AND c.period = p_day FOR UPDATE;
        END IF;
        SELECT c.micros, c.images INTO um_m, um_i FROM counters c
            WHERE c.scope = 'user_month' AND c.key = user_key AND c.period = p_month FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO counters VALUES ('user_month', user_key, p_month, 0, 0) ON CONFLICT DO NOTHING;
            SELECT c.micros, c.images INTO um_m, um_i FROM counters c
                WHERE c.scope = 'user_month' AND c.key = user_key AND c.period = p_month FOR UPDATE;
        END IF;
        SELECT c.micros INTO wm FROM counters c
            WHERE c.scope = 'workspace_month' AND c.key = tenant_key AND c.period = p_month FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO counters VALUES ('workspace_month', tenant_key, p_month, 0, 0) ON CONFLICT DO NOTHING;
            SELECT c.micros INTO wm FROM counters c
                WHERE c.scope = 'workspace_month' AND c.key = tenant_key AND c.period = p_month FOR UPDATE;
        END IF;
        IF max_jobs IS NOT NULL THEN
            SELECT count(DISTINCT job_id) INTO used FROM ledger WHERE platform = p_platform
                AND workspace = p_workspace AND "user" = p_user AND status IN ('reserved', 'running', 'batched');
            IF used >= max_jobs THEN
                refused := 'max_jobs'; RETURN;
            END IF;
            used := NULL;
        END IF;
        IF since IS NOT NULL THEN
            SELECT max(created_at) INTO last_at FROM ledger WHERE platform = p_platform
                AND workspace = p_workspace AND "user" = p_user AND created_at > since;
            IF last_at IS NOT NULL THEN
                refused := 'cooldown'; RETURN;
            END IF;
        END IF;
        SELECT * INTO lu FROM limits WHERE scope = 'user' AND key = user_key;
        SELECT * INTO lc FROM limits WHERE scope = 'channel' AND key = channel_key;
        SELECT * INTO lw FROM limits WHERE scope = 'workspace' AND key = tenant_key;
        lims := ARRAY[coalesce(lu.daily_micros, defaults[1]), coalesce(lu.daily_images, defaults[2]),
            coalesce(lu.monthly_micros, defaults[3]), coalesce(lu.monthly_images, defaults[4]),
            coalesce(lc.monthly_micros, defaults[5]), coalesce(lw.monthly_micros, defaults[6])];
        uses := ARRAY[ud_m, ud_i, um_m, um_i, cm, wm];
        needs := ARRAY[need_m, need_i, need_m, need_i, need_m, need_m];
        FOR n IN 1..6 LOOP
            IF lims[n] IS NOT NULL AND lims[n] <> -1 AND uses[n] + needs[n] > lims[n] THEN
                refused := labels[n]; used := uses[n]; lim := lims[n]; RETURN;
            END IF;
        END LOOP;
    END $$""",
    """CREATE OR REPLACE FUNCTION imagebot_reserve(
        p_job_id text, p_count integer, p_each bigint, p_platform text, p_workspace text, p_channel text,
        p_user text, p_model text, p_size text, p_quality text, p_format text, p_prompt text, p_owner text,
        p_day text, p_month text, p_stamp text, p_mode text, user_key text, channel_key text, tenant_key text,
        defaults bigint[], max_jobs bigint, since text,
        OUT refused text, OUT used bigint, OUT lim bigint, OUT last_at text, OUT ids bigint[])
    LANGUAGE plpgsql AS $$
    DECLARE
        rid bigint;
    BEGIN
        SELECT a.refused, a.used, a.lim, a.last_at INTO refused, used, lim, last_at FROM imagebot_admit(
            p_platform, p_workspace, p_user, user_key, channel_key, tenant_key, p_day, p_month,
            p_each * p_count, p_count, defaults, max_jobs, since) AS a;
        IF refused IS NOT NULL THEN
            RETURN;
        END IF;
        ids := ARRAY[]::bigint[];
        FOR seq IN 0..p_count - 1 LOOP
            INSERT INTO ledger (job_id, seq, platform, workspace, channel, "user", model, size, quality, format,
                prompt, status, reserved_micros, actual_micros, attempts, owner, day, month, created_at,
                updated_at, mode)
            VALUES (p_job_id, seq, p_platform, p_workspace, p_channel, p_user, p_model, p_size, p_quality,
                p_format, p_prompt, 'reserved', p_each, 0, 0, p_owner, p_day, p_month, p_stamp, p_stamp, p_mode)
            RETURNING id INTO rid;
            ids := ids || rid;
        END LOOP;
    END $$""",
    # A retry's extension of an open row: `refused` is 'closed' when the row is no longer open.
    """CREATE OR REPLACE FUNCTION imagebot_extend(p_row bigint, p_micros bigint, p_stamp text, defaults bigint[],
        OUT refused text, OUT used bigint, OUT lim bigint, OUT row_day text)
    LANGUAGE plpgsql AS $$
    DECLARE
        r record;
        tenant text;
    BEGIN
        SELECT * INTO r FROM ledger WHERE id = p_row FOR UPDATE;
        IF NOT FOUND OR r.status NOT IN ('reserved', 'running', 'batched') THEN
            refused := 'closed'; RETURN;
        END IF;
        row_day := r.day;
        tenant := imagebot_part(r.platform) || ':' || imagebot_part(r.workspace);
        SELECT a.refused, a.used, a.lim INTO refused, used, lim FROM imagebot_admit(
            r.platform, r.workspace, r."user", tenant || ':' || imagebot_part(r."user"),
            tenant || ':' || imagebot_part(r.channel), tenant, r.day, r.month, p_micros, 0, defaults, NULL,
            NULL) AS a;
        IF refused IS NOT NULL THEN
            RETURN;
        END IF;
        UPDATE ledger SET reserved_micros = reserved_micros + p_micros, updated_at = p_stamp WHERE id = p_row;
    END $$""",
]
# Version 6 (SQLite's `_v12_people`): each person's own defaults per tenant (bot/store/people.py).
PEOPLE = [
    """CREATE TABLE IF NOT EXISTS user_settings (tenant TEXT, "user" TEXT, name TEXT, value TEXT NOT NULL,
        PRIMARY KEY (tenant, "user", name))""",
]
MIGRATIONS = {1: SCHEMA, 2: JOBSTATE, 3: RESOURCES, 4: RELAX_KEYS, 5: FAST_RESERVE, 6: PEOPLE}

_USER = re.compile(r"""(?<![\w."'])user(?![\w"'])""")  # the column, not 'user' in a string literal
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", re.IGNORECASE)


def is_url(target: object) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def require_driver() -> None:
    """ConfigError (MISSING_DRIVER) when psycopg, the `[postgres]` extra, cannot be imported."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_DRIVER) from None


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """One statement of the shared dialect, as PostgreSQL takes it."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    text = sql.replace("%", "%%").replace("?", "%s").replace("/*lock*/", "FOR UPDATE")
    text = _USER.sub('"user"', text)
    if _OR_IGNORE.match(text):
        text = _OR_IGNORE.sub("INSERT INTO", text) + " ON CONFLICT DO NOTHING"
    return text


def is_retryable(exc: BaseException) -> bool:
    """A transaction that lost a race (serialization failure, deadlock): run it again."""
    if "psycopg" not in sys.modules:  # no PostgreSQL connection was ever opened: a SQLite error
        return False
    from psycopg import errors

    return isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected)


class _Cursor:
    """What callers use of a sqlite3 cursor: fetchone, fetchall, rowcount, iteration."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection that takes the shared dialect (autocommit; transactions are explicit)."""

    def __init__(self, url: str) -> None:
        require_driver()
        import psycopg

        self.url = url
        self._conn = psycopg.connect(url, autocommit=True)
        self.round_trips = 0  # statements sent, each one network round trip (benchmarks/quota.py reads it)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        self.round_trips += 1
        return _Cursor(self._conn.execute(translate(sql), list(params) if params else None))  # type: ignore[arg-type]

    def native(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        """One statement in PostgreSQL's own dialect (`%s` placeholders, nothing translated)."""
        self.round_trips += 1
        return _Cursor(self._conn.execute(sql, list(params) if params is not None else None))  # type: ignore[arg-type]

    @property
    def in_transaction(self) -> bool:
        from psycopg import pq

        return self._conn.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def lost(self) -> bool:
        """Closed or broken (psycopg marks it so after a failed query: the server restarted, the network
        dropped it). Safe to read from any thread."""
        return bool(self._conn.closed or self._conn.broken)

    def reconnect(self) -> None:
        """Replace the connection with a new one to the same database (on the thread that owns it, outside a
        transaction: whatever the old one had open is gone with it)."""
        import psycopg

        self._conn.close()
        self._conn = psycopg.connect(self.url, autocommit=True)

    def close(self) -> None:
        self._conn.close()


class PgDatabase:
    """The surface of sqlite_utils.Database the core uses, over PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = PgConnection(url)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        return self.conn.execute(sql, params)


def connect(url: str, target: int = SCHEMA_VERSION) -> PgDatabase:
    """Open the database and bring its schema up to date (safe when several replicas start at once).
    `target`: stop at that version (the migration tests build databases of earlier versions)."""
    db = PgDatabase(url)
    conn = db.conn
    conn.execute("BEGIN")
    try:
        conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)"
        )
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        for version in range(current + 1, target + 1):
            for statement in MIGRATIONS[version]:
                conn.native(statement)  # PostgreSQL's own dialect: nothing translated
            conn.execute("INSERT INTO schema_version VALUES (?, now()::text)", [version])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return db
