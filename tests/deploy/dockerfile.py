"""A reader for the small Dockerfile subset ``docker/*.Dockerfile`` use, so tests follow the files.

Instructions are split into stages; ``ARG`` defaults and ``ENV`` values are expanded (``${NAME}``)
the way Docker does for those two; ``CMD`` and ``HEALTHCHECK CMD`` must be in exec (JSON) form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Instruction:
    """One instruction: upper-case keyword and its raw argument text (continuations joined)."""

    keyword: str
    args: str


@dataclass
class Stage:
    """A ``FROM`` and what follows it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        """The only (or, as Docker does for CMD and friends, the last) instruction of a kind."""
        found = self.all(keyword)
        if not found:
            raise LookupError(f"no {keyword} in stage {self.name or self.base}")
        return found[-1]

    def env(self) -> dict[str, str]:
        """``ENV`` of this stage, with ``ARG`` defaults and earlier values expanded."""
        scope: dict[str, str] = {}
        env: dict[str, str] = {}
        for ins in self.instructions:
            if ins.keyword not in ("ARG", "ENV"):
                continue
            for token in shlex.split(ins.args):
                name, sep, value = token.partition("=")
                if not sep and ins.keyword == "ARG":
                    scope.setdefault(name, "")
                    continue
                value = _VAR.sub(lambda m: scope.get(m.group(1) or m.group(2), ""), value)
                scope[name] = value
                if ins.keyword == "ENV":
                    env[name] = value
        return env

    def exec_form(self, keyword: str) -> list[str]:
        """``CMD`` (or ``ENTRYPOINT``) as its JSON argument list."""
        args = json.loads(self.one(keyword).args)
        assert isinstance(args, list)
        assert all(isinstance(a, str) for a in args)
        return args

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """``HEALTHCHECK`` options (``--interval`` ...) and its exec-form command."""
        text = self.one("HEALTHCHECK").args
        opts: dict[str, str] = {}
        while text.startswith("--"):
            option, _, text = text.partition(" ")
            key, _, value = option[2:].partition("=")
            opts[key] = value
            text = text.lstrip()
        keyword, _, command = text.partition(" ")
        if keyword != "CMD":
            raise ValueError(f"HEALTHCHECK must use CMD, got {keyword!r}")
        args = json.loads(command)
        assert isinstance(args, list)
        return opts, [str(a) for a in args]


@dataclass
class Dockerfile:
    """A parsed Dockerfile: its stages in order (the last one is the image)."""

    path: Path
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The runtime stage."""
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        """A stage by its ``AS`` name."""
        for s in self.stages:
            if s.name == name:
                return s
        raise LookupError(f"no stage {name!r} in {self.path}")


def parse(path: Path) -> Dockerfile:
    """Read ``path`` into stages and instructions."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{path}: {keyword} before FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return Dockerfile(path, stages)
