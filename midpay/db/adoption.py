"""Taking over tables another backend laid out: what ``migrate`` found, reused and added.

midpay's migrations share their tables with an older backend (node-pg-migrate's
layout). They never create an index or a foreign key equivalent to one that exists,
whatever its name: before each file, ``migrate`` defines two helpers in ``pg_temp``
(gone with the session) that the files call instead of ``CREATE INDEX``:

    pg_temp.midpay_ensure_index(table, name, unique, spec)
        ``spec`` is what follows ``ON table`` in CREATE INDEX: "(order_id)",
        "(last_checked_at NULLS FIRST, created_at) WHERE status IN (...)". The index
        is built on an empty copy of the table first, and PostgreSQL's own rendering
        of it (method, columns or expressions, order, operator classes, predicate) is
        compared with every valid index of the table; a match (unique where unique is
        wanted) is reused and recorded, otherwise the index is created.
    pg_temp.midpay_ensure_foreign_key(table, column, ref_table, ref_column, name)
        a foreign key with the same columns and target, whatever its name, is reused.
    pg_temp.midpay_drop_duplicate_index(name)
        drops midpay's index ``name`` when another index of its table is the same.

What they reuse, plus the tables that existed before midpay's first migration and the
columns midpay's files added to them, is stored with each file's row in
``midpay_schema_migrations.found`` and shown by ``migrate --status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from midpay.db.schema import TABLES

PRELUDE = r"""
CREATE TEMP TABLE IF NOT EXISTS midpay_found (
    kind text NOT NULL, table_name text NOT NULL, name text NOT NULL, existing text
);
TRUNCATE pg_temp.midpay_found;

CREATE OR REPLACE FUNCTION pg_temp.midpay_index_shape(p_index regclass) RETURNS text
LANGUAGE sql STABLE AS $f$
    SELECT regexp_replace(pg_get_indexdef(p_index), '^.*? USING ', '')
$f$;

CREATE OR REPLACE FUNCTION pg_temp.midpay_ensure_index(p_table regclass, p_name text, p_unique boolean, p_spec text)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    wanted text;
    existing text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
                WHERE c.relname = p_name
                  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = p_table)) THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TEMP TABLE midpay_probe (LIKE %s)', p_table);
    EXECUTE format('CREATE INDEX midpay_probe_idx ON pg_temp.midpay_probe %s', p_spec);
    wanted := pg_temp.midpay_index_shape('pg_temp.midpay_probe_idx'::regclass);
    DROP TABLE pg_temp.midpay_probe;
    SELECT c.relname INTO existing
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = p_table AND i.indisvalid AND (i.indisunique OR NOT p_unique)
       AND pg_temp.midpay_index_shape(i.indexrelid) = wanted
     ORDER BY i.indisunique = p_unique DESC, c.relname
     LIMIT 1;
    IF existing IS NOT NULL THEN
        INSERT INTO pg_temp.midpay_found VALUES ('index_reused', p_table::text, p_name, existing);
        RETURN;
    END IF;
    EXECUTE format('CREATE %s INDEX %I ON %s %s',
                   CASE WHEN p_unique THEN 'UNIQUE' ELSE '' END, p_name, p_table, p_spec);
END
$f$;

CREATE OR REPLACE FUNCTION pg_temp.midpay_ensure_foreign_key(
    p_table regclass, p_column name, p_ref regclass, p_ref_column name, p_name text
) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    existing text;
BEGIN
    SELECT con.conname INTO existing
      FROM pg_constraint con
     WHERE con.contype = 'f' AND con.conrelid = p_table AND con.confrelid = p_ref
       AND con.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = p_table AND attname = p_column)]
       AND con.confkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = p_ref AND attname = p_ref_column)]
     ORDER BY con.conname = p_name DESC, con.conname
     LIMIT 1;
    IF existing = p_name THEN
        RETURN;
    ELSIF existing IS NOT NULL THEN
        INSERT INTO pg_temp.midpay_found VALUES ('constraint_reused', p_table::text, p_name, existing);
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (%I)',
                   p_table, p_name, p_column, p_ref, p_ref_column);
END
$f$;

CREATE OR REPLACE FUNCTION pg_temp.midpay_drop_duplicate_index(p_name text) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE
    ours regclass := to_regclass(quote_ident(p_name));
    tbl regclass;
    twin text;
BEGIN
    IF ours IS NULL THEN
        RETURN;
    END IF;
    SELECT i.indrelid INTO tbl FROM pg_index i WHERE i.indexrelid = ours;
    SELECT c.relname INTO twin
      FROM pg_index i JOIN pg_index o ON o.indexrelid = ours
      JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = o.indrelid AND i.indexrelid <> ours AND i.indisvalid
       AND (i.indisunique OR NOT o.indisunique)
       AND pg_temp.midpay_index_shape(i.indexrelid) = pg_temp.midpay_index_shape(ours)
     ORDER BY c.relname
     LIMIT 1;
    IF twin IS NOT NULL THEN
        EXECUTE format('DROP INDEX %s', ours);
        INSERT INTO pg_temp.midpay_found VALUES ('index_dropped', tbl::text, p_name, twin);
    END IF;
END
$f$;
"""

_KINDS = ("index_reused", "constraint_reused", "index_dropped")


@dataclass
class Found:
    """What one migration (or all of them, merged) found in the tables it took over."""

    tables_adopted: list[str] = field(default_factory=list)
    indexes_reused: list[dict[str, Any]] = field(default_factory=list)
    constraints_reused: list[dict[str, Any]] = field(default_factory=list)
    indexes_dropped: list[dict[str, Any]] = field(default_factory=list)
    columns_added: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.tables_adopted or self.indexes_reused or self.constraints_reused or self.indexes_dropped
            or self.columns_added
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "tables_adopted": list(self.tables_adopted),
            "indexes_reused": list(self.indexes_reused),
            "constraints_reused": list(self.constraints_reused),
            "indexes_dropped": list(self.indexes_dropped),
            "columns_added": list(self.columns_added),
        }

    @classmethod
    def from_json(cls, doc: Any) -> Found:
        if not isinstance(doc, dict):
            return cls()
        return cls(**{k: list(doc.get(k) or []) for k in cls().as_json()})


def merge(version_found: list[tuple[int, Found]]) -> Found:
    """Every file's findings in one, each entry naming the version that recorded it."""
    total = Found()
    for version, found in version_found:
        total.tables_adopted += [t for t in found.tables_adopted if t not in total.tables_adopted]
        for name in ("indexes_reused", "constraints_reused", "indexes_dropped", "columns_added"):
            getattr(total, name).extend({**entry, "version": version} for entry in getattr(found, name))
    return total


def columns(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """The columns of midpay's tables that exist now, by table."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    return found


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Define the helpers and empty the log (inside the file's transaction)."""
    conn.execute(PRELUDE.encode("utf-8"))


def collect(
    conn: psycopg.Connection[Any], before: dict[str, set[str]], adopted: set[str], *, first: bool
) -> Found:
    """What the file just applied reused and added; ``first`` when no midpay file ran before it.

    On the first file, every table of midpay's that already existed is adopted; columns
    added are counted on adopted tables only (midpay's own tables are midpay's business).
    """
    found = Found()
    if first:
        found.tables_adopted = sorted(before)
        adopted = adopted | set(before)
    for kind, table, name, existing in conn.execute(
        "SELECT kind, table_name, name, existing FROM pg_temp.midpay_found ORDER BY kind, table_name, name"
    ).fetchall():
        if kind in _KINDS:
            target = {"index_reused": found.indexes_reused, "constraint_reused": found.constraints_reused,
                      "index_dropped": found.indexes_dropped}[kind]
            target.append({"table": table, "name": name, "existing": existing})
    after = columns(conn)
    for table in sorted(adopted):
        for column in sorted(after.get(table, set()) - before.get(table, set())):
            found.columns_added.append({"table": table, "column": column})
    return found
