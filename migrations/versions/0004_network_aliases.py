"""Network aliases: other names under which the same weights were uploaded.

Revision ID: 0004
Revises: 0003 (the networks' input domain)
Create Date: 2026-12-02 18:30:00

``network_aliases``: one row per extra name (unique across aliases), pointing at ``networks.id``. A
network's own name stays in ``networks.name``; a job that names either finds the network.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('network_aliases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('network_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', name='uq_network_aliases_name')
    )
    with op.batch_alter_table('network_aliases', schema=None) as batch_op:
        batch_op.create_index('ix_network_aliases_network', ['network_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('network_aliases', schema=None) as batch_op:
        batch_op.drop_index('ix_network_aliases_network')
    op.drop_table('network_aliases')
