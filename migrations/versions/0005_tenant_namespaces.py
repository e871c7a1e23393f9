"""Tenants are separate namespaces: cube ids are unique per tenant, unit ids per cube.

Before, ``cubes.id`` was the primary key and ``memory_units.id`` was unique server-wide, so
one tenant creating or importing a cube learned from the 409 that another tenant used that
cube id or unit id.

Design: a surrogate internal key. ``cubes.key`` becomes the primary key (server-wide
unique, never shown by the API); the public ``cubes.id`` is unique per tenant
(``uq_cubes_tenant_id``). Every child row references the internal key: ``cube_id`` becomes
``cube_key`` in ``messages``, ``memory_units``, ``unit_links`` (foreign keys to
``cubes.key``) and ``jobs`` (no foreign key: a job outlives its cube and ends quietly).
``memory_units.id`` becomes unique per cube (``uq_units_cube_id``), like message ids
already were. A composite key ``(tenant, id)`` was the alternative; it would put the tenant
into every child row, foreign key and index, and let a renamed tenant ripple through them.
With one opaque key, no query can name a cube by its public id: rows are reached by key,
and the key only through the tenant (``UnitRepository.cube_row``).

The upgrade keeps every row. An existing cube's key is its old id, so the children's
values stay as they are (a column rename), and the FAISS snapshots, named by key, stay
valid. New cubes get random keys. On PostgreSQL the change is done in place (renames and
constraint swaps, no table rewrite); SQLite cannot alter constraints, so its tables are
rebuilt in batch mode, with foreign keys off for the rebuild (``Store.upgrade``).

The downgrade restores global ids, so it refuses (with the ids) when two tenants now
share a cube id or two cubes share a unit id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:50:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

import memos.store.models

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

#: names for the constraints 0001 left unnamed, so SQLite's batch mode can drop them
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "uq": "uq_%(table_name)s_%(column_0_name)s"}
#: the tables whose ``cube_id`` has a foreign key to ``cubes``
CHILDREN = ("messages", "memory_units", "unit_links")


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.add_column('cubes', sa.Column('key', sa.String(length=128), nullable=True))
    op.execute("UPDATE cubes SET key = id")
    _rename_cube_columns('cube_id', 'cube_key')
    if _postgres():
        for table in CHILDREN:
            op.drop_constraint(f'{table}_cube_id_fkey', table, type_='foreignkey')
        op.alter_column('cubes', 'key', nullable=False)
        op.drop_constraint('cubes_pkey', 'cubes', type_='primary')
        op.create_primary_key('cubes_pkey', 'cubes', ['key'])
        op.create_unique_constraint('uq_cubes_tenant_id', 'cubes', ['tenant', 'id'])
        for table in CHILDREN:
            op.create_foreign_key(f'{table}_cube_key_fkey', table, 'cubes', ['cube_key'],
                                  ['key'], ondelete='CASCADE')
        op.drop_constraint('memory_units_id_key', 'memory_units', type_='unique')
        op.create_unique_constraint('uq_units_cube_id', 'memory_units', ['cube_key', 'id'])
        return
    _rebuild_sqlite_cubes(primary_key='key')
    for table in CHILDREN:
        old_fk = _sqlite_cube_fk(table)
        with op.batch_alter_table(table, recreate='always', naming_convention=NAMING) as batch:
            batch.drop_constraint(old_fk, type_='foreignkey')
            batch.create_foreign_key(f'fk_{table}_cube_key_cubes', 'cubes', ['cube_key'],
                                     ['key'], ondelete='CASCADE')
            if table == 'memory_units':
                batch.drop_constraint('uq_memory_units_id', type_='unique')
                batch.create_unique_constraint('uq_units_cube_id', ['cube_key', 'id'])


def _rename_cube_columns(old: str, new: str) -> None:
    """``cube_id`` ↔ ``cube_key`` in the children and jobs; indexes and constraints follow
    the column on both databases, except the two indexes named after it."""
    op.drop_index(f'ix_unit_links_{old}', table_name='unit_links')
    op.drop_index(f'ix_jobs_{old}', table_name='jobs')
    for table in (*CHILDREN, 'jobs'):
        op.alter_column(table, old, new_column_name=new,
                        existing_type=sa.String(length=128), existing_nullable=table == 'jobs')
    op.create_index(f'ix_unit_links_{new}', 'unit_links', [new])
    op.create_index(f'ix_jobs_{new}', 'jobs', [new])


def _sqlite_cube_fk(table: str) -> str:
    """The name batch mode knows the table's foreign key to ``cubes`` by: its own, or the
    one :data:`NAMING` gives it when it has none (as 0001 created it)."""
    [fk] = [fk for fk in sa.inspect(op.get_bind()).get_foreign_keys(table)
            if fk['referred_table'] == 'cubes']
    return fk['name'] or f"fk_{table}_{fk['constrained_columns'][0]}_cubes"


def _rebuild_sqlite_cubes(*, primary_key: str) -> None:
    """SQLite cannot change a primary key in place: copy ``cubes`` into a new table whose
    primary key is ``primary_key`` (``key`` up, ``id`` down), then swap the tables."""
    up = primary_key == 'key'
    columns = [
        sa.Column('key', sa.String(length=128), primary_key=up) if up else None,
        sa.Column('id', sa.String(length=128), primary_key=not up, nullable=False),
        sa.Column('tenant', sa.String(length=128), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('metadata', sa.JSON(), nullable=False),
        sa.Column('embedding_model', sa.String(length=200), nullable=False),
        sa.Column('embedding_dim', sa.Integer(), nullable=False),
        sa.Column('index_version', sa.BigInteger(), nullable=False),
        sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    ]
    new = sa.Table('_new_cubes', sa.MetaData(), *[c for c in columns if c is not None],
                   *([sa.UniqueConstraint('tenant', 'id', name='uq_cubes_tenant_id')] if up
                     else []))
    names = ", ".join(f'"{c.name}"' for c in new.columns)
    new.create(op.get_bind())
    op.execute(f"INSERT INTO _new_cubes ({names}) SELECT {names} FROM cubes")
    op.drop_index('ix_cubes_tenant', table_name='cubes')
    op.drop_table('cubes')
    op.rename_table('_new_cubes', 'cubes')
    op.create_index('ix_cubes_tenant', 'cubes', ['tenant'])


def _refuse_shared_ids() -> None:
    bind = op.get_bind()
    cubes = bind.execute(sa.text(
        "SELECT id FROM cubes GROUP BY id HAVING COUNT(*) > 1 ORDER BY id")).scalars().all()
    units = bind.execute(sa.text(
        "SELECT id FROM memory_units GROUP BY id HAVING COUNT(*) > 1 ORDER BY id")
    ).scalars().all()
    if cubes or units:
        raise RuntimeError(
            "cannot downgrade below 0005: ids that are unique per tenant or cube now would "
            f"collide (cube ids {list(cubes[:5])}, unit ids {list(units[:5])}); delete or "
            "re-import those cubes first")


def downgrade() -> None:
    _refuse_shared_ids()
    if _postgres():
        for table in CHILDREN:
            op.drop_constraint(f'{table}_cube_key_fkey', table, type_='foreignkey')
    # Children and jobs hold keys; the old schema's cube_id is the cube's id.
    for table in (*CHILDREN, 'jobs'):
        op.execute(f"UPDATE {table} SET cube_key = (SELECT id FROM cubes "
                   f"WHERE cubes.key = {table}.cube_key) WHERE cube_key IS NOT NULL")
    _rename_cube_columns('cube_key', 'cube_id')
    if _postgres():
        op.drop_constraint('uq_units_cube_id', 'memory_units', type_='unique')
        op.create_unique_constraint('memory_units_id_key', 'memory_units', ['id'])
        op.drop_constraint('uq_cubes_tenant_id', 'cubes', type_='unique')
        op.drop_constraint('cubes_pkey', 'cubes', type_='primary')
        op.create_primary_key('cubes_pkey', 'cubes', ['id'])
        for table in CHILDREN:
            op.create_foreign_key(f'{table}_cube_id_fkey', table, 'cubes', ['cube_id'], ['id'],
                                  ondelete='CASCADE')
        op.drop_column('cubes', 'key')
        return
    _rebuild_sqlite_cubes(primary_key='id')
    for table in CHILDREN:
        old_fk = _sqlite_cube_fk(table)
        with op.batch_alter_table(table, recreate='always', naming_convention=NAMING) as batch:
            batch.drop_constraint(old_fk, type_='foreignkey')
            batch.create_foreign_key(f'fk_{table}_cube_id_cubes', 'cubes', ['cube_id'],
                                     ['id'], ondelete='CASCADE')
            if table == 'memory_units':
                batch.drop_constraint('uq_units_cube_id', type_='unique')
                batch.create_unique_constraint('uq_memory_units_id', ['id'])
