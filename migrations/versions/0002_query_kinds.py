"""Query kinds beyond robustness (invertibility, VNN-COMP): per-query parameters, the answer word, extra JSON.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00

``queries.parameters``: what a query needs besides its centre (the VNN-LIB text and network of a VNN-COMP
instance). ``certificates.answer``: the kind's own word (invertible / not invertible / unknown; holds /
violated / unknown). ``certificates.extra``: kind-specific results (the witness pair (x, y) with its distance
and output difference; a radius search's evaluations). ``stage`` already exists since 0001.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parameters', sa.JSON(), nullable=True))
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answer', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('extra')
        batch_op.drop_column('answer')
    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.drop_column('parameters')
