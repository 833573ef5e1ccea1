"""tag rules: one pattern syntax (issue 15)

Deny and require rules held bare RE2 regular expressions, matched whole (RE2 fullmatch); every kind
now takes globs, and a regex only behind the `re:` prefix, still matched whole. So an old deny or
require pattern `P` becomes `re:P`: the same regex under the same full-match semantics, so no rule
changes what it matches. Immutable rules were globs already and stay as they are. tag_pattern
widens by the prefix, so a 255-character regex still fits.

Revision ID: 0017_tag_rule_syntax
Revises: 0016_event_request_id
"""

from alembic import op
import sqlalchemy as sa


revision = '0017_tag_rule_syntax'
down_revision = '0016_event_request_id'
branch_labels = None
depends_on = None

PREFIX = "re:"
_rules = sa.table("tag_rules", sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("tag_pattern", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("tag_rules") as batch:
        batch.alter_column("tag_pattern", existing_type=sa.String(255), type_=sa.String(260), existing_nullable=False)
    bind = op.get_bind()
    # A plain UPDATE with string concatenation (|| on both SQLite and PostgreSQL), of EVERY deny/require rule:
    # an old regex may itself start with `re:` (a literal no tag can hold, so it matched nothing); it becomes
    # `re:re:…`, still matching nothing, not `re:…`, which would start refusing tags.
    bind.execute(
        _rules.update()
        .where(_rules.c.kind.in_(("deny", "require")))
        .values(tag_pattern=sa.literal(PREFIX) + _rules.c.tag_pattern)
    )


def downgrade() -> None:
    bind = op.get_bind()
    # Back to bare regexes. A glob deny/require rule written since cannot be expressed as a regex here
    # without translating it; it is dropped rather than kept with a different meaning.
    bind.execute(_rules.delete().where(_rules.c.kind.in_(("deny", "require")),
                                       ~_rules.c.tag_pattern.startswith(PREFIX, autoescape=True)))
    bind.execute(
        _rules.update()
        .where(_rules.c.kind.in_(("deny", "require")))
        .values(tag_pattern=sa.func.substr(_rules.c.tag_pattern, len(PREFIX) + 1))
    )
    bind.execute(_rules.delete().where(_rules.c.kind == "immutable", _rules.c.tag_pattern.startswith(PREFIX, autoescape=True)))
    with op.batch_alter_table("tag_rules") as batch:
        batch.alter_column("tag_pattern", existing_type=sa.String(260), type_=sa.String(255), existing_nullable=False)
