"""Hiring-screen example: a rule-based screening endpoint guarded under NYC LL144 and the EEOC four-fifths rule."""
