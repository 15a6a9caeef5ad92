"""Rewrite the ``AWS::Logs::QueryDefinition`` resources of ``deploy/stack.yaml`` from ``common/queries.py``.

The saved queries are written once, in ``common.queries.QUERIES``; the template carries a copy
(CloudFormation cannot import Python). ``tests/deploy/test_stack.py`` fails when the copy is
stale; run ``.venv/bin/python deploy/sync_queries.py`` to refresh it. A parameter ``{name}`` is
deployed as ``<name>``, to be filled in before running the saved query.
"""

from __future__ import annotations

from pathlib import Path

from common.queries import QUERIES

TEMPLATE = Path(__file__).resolve().with_name("stack.yaml")
BEGIN = "  # <name> marks a value to fill in before running.\n"
END = "  # ---------------------------------------------------------------- images"


def query_resources() -> str:
    """The YAML of one QueryDefinition per saved query."""
    out = []
    for q in QUERIES.values():
        text = q.render({p: f"<{p}>" for p in q.params})
        logical = "Query" + "".join(w.capitalize() for w in q.name.split("-"))
        body = "\n".join("        " + line for line in text.split("\n"))
        out.append(
            f"  {logical}:\n"
            "    Type: AWS::Logs::QueryDefinition\n"
            "    Properties:\n"
            f'      Name: !Sub "${{AWS::StackName}}/{q.name}"\n'
            "      LogGroupNames: [!Ref S3AppLogGroup, !Ref SqsAppLogGroup]\n"
            f"      QueryString: |-\n{body}\n"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    """Replace the block between the markers in the template."""
    text = TEMPLATE.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    TEMPLATE.write_text(text[:start] + query_resources() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    main()
