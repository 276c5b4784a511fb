"""The warehouse: engines and locks (engine), the schema (schema), streaming reads (read), atomic
interval writes (write), and the Alembic migrations that create the schema.

PostgreSQL is the production warehouse and takes the fast path: COPY out streamed in fixed-size
chunks, binary COPY in. SQLite is the zero-setup default and takes plain DB-API batches. Both
replace one interval's rows inside one transaction, so a failure leaves the interval as it was.
"""

from batchwatch.warehouse.engine import (
    QueryRefused,
    is_postgres,
    is_unique_violation,
    lock_key,
    lock_unit,
    make_engine,
    migrate,
    refusal,
    refused_queries,
)
from batchwatch.warehouse.read import read_frame, sample_predicate, stream_frames, utc_timestamp
from batchwatch.warehouse.timeouts import (
    ConnectTimeout,
    DatabaseTimeout,
    IdleInTransactionTimeout,
    LockTimeout,
    StatementTimeout,
    server_timeouts,
    timeout_error,
)
from batchwatch.warehouse.write import IntervalWriter, load_frame, partition_name, replace_interval

__all__ = [
    "ConnectTimeout", "DatabaseTimeout", "IdleInTransactionTimeout", "LockTimeout", "StatementTimeout", "server_timeouts", "timeout_error",
    "IntervalWriter", "QueryRefused", "is_postgres", "is_unique_violation", "load_frame", "lock_key", "lock_unit", "make_engine",
    "migrate", "partition_name", "read_frame", "refusal", "refused_queries", "replace_interval", "sample_predicate", "stream_frames",
    "utc_timestamp",
]
