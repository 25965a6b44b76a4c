"""`python -m kahuna_pg.proto`: regenerate the checked-in modules from proto/kahuna.proto."""

from kahuna_pg.proto import generate

for path in generate():
    print(f"wrote {path}")
