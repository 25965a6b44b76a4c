"""A comparable snapshot of everything kahuna installs, read from the catalog (not the scripts).

`catalog_snapshot(conn)` describes schema `kahuna` and the `kahuna_*` functions of the
function schema (public by default) by name, never by OID, so that two databases where
kahuna was installed by different paths (a fresh install, the first version plus every
upgrade, `CREATE EXTENSION`, a pg_restore) can be compared with `==`; pytest then shows
the objects that differ. Every version's tests reuse it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

Snapshot = dict[str, dict[str, Any]]

# Every query takes the kahuna schema as %(schema)s and the schema of the kahuna_* functions
# as %(functions)s; each returns one row per object: its name as `key`, then named properties. Objects are named with
# format('%%I.%%I'), types with format_type, expressions with the pg_get_*def functions:
# all independent of OIDs and of the session's search_path (names are qualified whenever
# the schema is not pg_catalog, since the default search_path holds neither kahuna nor a
# temporary schema).
_QUERIES: dict[str, str] = {
    "schema": """
        SELECT n.nspname AS key, pg_catalog.pg_get_userbyid(n.nspowner) AS owner, n.nspacl::text AS acl,
               pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment
          FROM pg_catalog.pg_namespace n
         WHERE n.nspname = %(schema)s
    """,
    # Tables, partitions, views, sequences, foreign tables; their storage and partitioning.
    "relations": """
        SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname) AS key,
               c.relkind::text AS kind, c.relpersistence::text AS persistence, c.reloptions::text AS options,
               c.relreplident::text AS replica_identity, c.relrowsecurity AS row_security,
               c.relforcerowsecurity AS force_row_security, c.relacl::text AS acl,
               pg_catalog.pg_get_partkeydef(c.oid) AS partition_key,
               (SELECT pg_catalog.format('%%I.%%I', pn.nspname, p.relname)
                  FROM pg_catalog.pg_inherits i
                  JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
                  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                 WHERE i.inhrelid = c.oid) AS parent,
               pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS view,
               (SELECT ROW(s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
                           s.seqcache, s.seqcycle)::text
                  FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid) AS sequence,
               pg_catalog.obj_description(c.oid, 'pg_class') AS comment
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    """,
    # Columns, in their order (dropped ones left out, so a position is what SELECT * shows).
    "columns": """
        SELECT pg_catalog.format('%%I.%%I.%%I', n.nspname, c.relname, a.attname) AS key,
               pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default, a.attgenerated::text AS generated,
               a.attidentity::text AS identity, a.attstorage::text AS storage,
               a.attcompression::text AS compression,
               CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END AS collation,
               a.attacl::text AS acl, pg_catalog.col_description(c.oid, a.attnum) AS comment
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped
    """,
    # Table and domain constraints: primary keys, uniques, checks, foreign keys, exclusions.
    "constraints": """
        SELECT pg_catalog.format('%%I.%%I.%%I', n.nspname,
                                 coalesce(c.relname, t.typname), k.conname) AS key,
               k.contype::text AS type, pg_catalog.pg_get_constraintdef(k.oid, true) AS definition,
               k.condeferrable AS deferrable, k.condeferred AS deferred, k.convalidated AS validated,
               k.conislocal AS local,
               -- NO INHERIT means something for a CHECK only; on the index constraints of a
               -- partition it records whether the partition got it by attaching (as pg_restore
               -- does) or from its parent, which is the same constraint.
               CASE WHEN k.contype = 'c' THEN k.connoinherit END AS no_inherit,
               pg_catalog.obj_description(k.oid, 'pg_constraint') AS comment
          FROM pg_catalog.pg_constraint k
          JOIN pg_catalog.pg_namespace n ON n.oid = k.connamespace
          LEFT JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
          LEFT JOIN pg_catalog.pg_type t ON t.oid = k.contypid
         WHERE n.nspname = %(schema)s
    """,
    "indexes": """
        SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname) AS key,
               pg_catalog.pg_get_indexdef(i.indexrelid) AS definition, i.indisprimary AS is_primary,
               i.indisunique AS is_unique, i.indisreplident AS is_replica_identity,
               i.indisclustered AS is_clustered, c.reloptions::text AS options,
               pg_catalog.obj_description(c.oid, 'pg_class') AS comment
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(schema)s
    """,
    "triggers": """
        SELECT pg_catalog.format('%%I.%%I.%%I', n.nspname, c.relname, g.tgname) AS key,
               pg_catalog.pg_get_triggerdef(g.oid, true) AS definition, g.tgenabled::text AS enabled,
               pg_catalog.obj_description(g.oid, 'pg_trigger') AS comment
          FROM pg_catalog.pg_trigger g
          JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(schema)s AND NOT g.tgisinternal
    """,
    "policies": """
        SELECT pg_catalog.format('%%I.%%I.%%I', n.nspname, c.relname, p.polname) AS key,
               p.polcmd::text AS command, p.polpermissive AS permissive, p.polroles::regrole[]::text AS roles,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS using,
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
          FROM pg_catalog.pg_policy p
          JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(schema)s
    """,
    # Functions and procedures of schema kahuna, and the kahuna_* ones of the function
    # schema. pg_get_functiondef carries language, volatility, strictness, parallel safety,
    # security, the SET clauses and the body; proconfig and the rest are listed as well so
    # that a difference reads plainly. Aggregates have no pg_get_functiondef.
    "functions": """
        SELECT pg_catalog.format('%%I.%%I(%%s)', n.nspname, p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)) AS key,
               p.prokind::text AS kind,
               CASE WHEN p.prokind <> 'a' THEN pg_catalog.pg_get_functiondef(p.oid) END AS definition,
               pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
               pg_catalog.pg_get_function_result(p.oid) AS result,
               l.lanname AS language, p.provolatile::text AS volatility, p.proparallel::text AS parallel,
               p.proisstrict AS strict, p.prosecdef AS security_definer, p.proleakproof AS leakproof,
               p.procost AS cost, p.prorows AS rows, p.proconfig::text AS config,
               p.proacl::text AS acl, pg_catalog.obj_description(p.oid, 'pg_proc') AS comment
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname = %(schema)s
            OR (n.nspname = %(functions)s AND p.proname LIKE 'kahuna\\_%%')
    """,
    # Composite types (with their attributes in order), enums (with their labels in order),
    # domains and ranges; the row types of tables are covered by "columns".
    "types": """
        SELECT pg_catalog.format('%%I.%%I', n.nspname, t.typname) AS key,
               t.typtype::text AS kind,
               (SELECT pg_catalog.array_agg(pg_catalog.format('%%I %%s', a.attname,
                                                pg_catalog.format_type(a.atttypid, a.atttypmod))
                                            ORDER BY a.attnum)::text
                  FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
               (SELECT pg_catalog.array_agg(e.enumlabel ORDER BY e.enumsortorder)::text
                  FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) AS labels,
               CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END AS base_type,
               t.typnotnull AS not_null, t.typdefault AS default, t.typacl::text AS acl,
               pg_catalog.obj_description(t.oid, 'pg_type') AS comment
          FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
          LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
         WHERE n.nspname = %(schema)s
           AND t.typtype IN ('c', 'e', 'd', 'r', 'm')
           AND (t.typtype <> 'c' OR c.relkind = 'c')
    """,
    "operators": """
        SELECT pg_catalog.format('%%I.%%s(%%s, %%s)', n.nspname, o.oprname,
                                 o.oprleft::regtype, o.oprright::regtype) AS key,
               o.oprresult::regtype::text AS result, o.oprcode::regprocedure::text AS function,
               pg_catalog.obj_description(o.oid, 'pg_operator') AS comment
          FROM pg_catalog.pg_operator o
          JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
         WHERE n.nspname = %(schema)s
    """,
}


def catalog_snapshot(conn: psycopg.Connection, schema: str = "kahuna", functions: str = "public") -> Snapshot:
    """What kahuna installed in `conn`'s database: section -> object name -> its description.

    Two databases hold the same kahuna schema exactly when their snapshots are equal.
    """
    params = {"schema": schema, "functions": functions}
    snapshot: Snapshot = {}
    for section, query in _QUERIES.items():
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query, params).fetchall()
        entries: dict[str, Any] = {}
        for row in rows:
            key = row.pop("key")
            assert key not in entries, f"{section}: {key} listed twice"
            entries[key] = row
        snapshot[section] = entries
    version = conn.execute("SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL", (f"{schema}.version()",)).fetchone()
    installed = None
    if version and version[0]:
        row = conn.execute(sql.SQL("SELECT {}.version()").format(sql.Identifier(schema))).fetchone()
        installed = row[0] if row else None
    snapshot["version"] = {"version": installed}
    return snapshot


def snapshot_differences(left: Snapshot, right: Snapshot) -> list[str]:
    """The objects that differ between two snapshots, one line each (for assertion messages)."""
    lines: list[str] = []
    for section in sorted(set(left) | set(right)):
        a, b = left.get(section, {}), right.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in a:
                lines.append(f"{section}: {key} only on the right")
            elif key not in b:
                lines.append(f"{section}: {key} only on the left")
            elif a[key] != b[key]:
                if isinstance(a[key], dict) and isinstance(b[key], dict):
                    fields = sorted(f for f in set(a[key]) | set(b[key]) if a[key].get(f) != b[key].get(f))
                    changes = "".join(
                        f"\n  {f}: {a[key].get(f)!r}\n  {' ' * len(f)}  != {b[key].get(f)!r}" for f in fields
                    )
                else:
                    changes = f"\n  {a[key]!r}\n  != {b[key]!r}"
                lines.append(f"{section}: {key} differs:{changes}")
    return lines
