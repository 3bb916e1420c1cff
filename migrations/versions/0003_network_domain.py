"""The input domain is part of the question: a network's domain, and the exact set each certificate is about.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:30:00

``networks.input_domain``: the box its inputs live in (``formulations.domains.Domain.to_json``: lower and
upper, null for an infinite side). Networks stored before this revision were answered on [0, 1] (every
query's ball was clipped to it), so that is their domain; a new upload states its own.
``certificates.input_set``: the set a certificate certifies (norm, eps, centre digest, domain).
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('networks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('input_domain', sa.JSON(), nullable=True))
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('input_set', sa.JSON(), nullable=True))
    networks = sa.table('networks', sa.column('input_domain', sa.JSON()))
    op.execute(networks.update().where(networks.c.input_domain.is_(None))
               .values(input_domain={"lower": 0.0, "upper": 1.0}))


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('input_set')
    with op.batch_alter_table('networks', schema=None) as batch_op:
        batch_op.drop_column('input_domain')
