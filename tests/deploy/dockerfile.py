"""Read the services' Dockerfile for one service, and replay its build stage without a
container engine.

The replay runs the build stage's own instructions on this machine, in a
directory that stands for the image's root: COPY takes files from the build
context as `.dockerignore` filters it, ENV and WORKDIR apply, and each RUN
(which must be a `uv sync`) runs with the same flags. What the runtime stage
keeps (its `COPY --from=build`) is all that is left afterwards, so a
dependency that only the development environment provides, or a file the
Dockerfile forgets to copy, makes the service fail to start.
"""

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args

    def env(self, inherited: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(inherited or {"PATH": BASE_PATH})
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = re.sub(
                    r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m[1] or m[2], ""), value
                )
        return env

    def workdir(self) -> str:
        return self.all("WORKDIR")[-1]

    def command(self) -> list[str]:
        command: list[str] = json.loads(self.one("CMD"))  # exec form, or this fails
        return command

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for args in self.all("LABEL"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                labels[key] = value
        return labels


@dataclass
class Dockerfile:
    path: Path
    stages: dict[str, Stage]

    @property
    def final(self) -> Stage:
        return list(self.stages.values())[-1]

    def stage(self, name: str) -> Stage:
        return self.stages[name]


def parse(path: Path, build_args: Mapping[str, str] | None = None) -> Dockerfile:
    """Instructions per stage; line continuations joined, comments dropped, and build
    arguments substituted (see ``expand``): FROM sees the ARGs declared before the first
    FROM, every other instruction those its stage declares, each one ``build_args`` or
    else its default. RUN is expanded as its shell would (the build arguments are its
    environment); CMD stays as written, since an exec form is never expanded."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    given = dict(build_args or {})
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = expand(args, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, words[0])
            stage_args = {}
        elif keyword == "ARG":
            name, has_default, default = args.partition("=")
            inherited = global_args.get(name) if current is not None else None
            value = given.get(name, default if has_default else inherited)
            (global_args if current is None else stage_args)[name] = value
            if current is not None:
                current.instructions.append((keyword, args))
        elif current is not None:
            if keyword not in ("CMD", "ENTRYPOINT"):
                args = expand(args, stage_args)
            current.instructions.append((keyword, args))
    return Dockerfile(path, stages)


# Hand-written: the Python Dockerfile libraries parse instructions but do not expand
# build arguments as the builder and RUN's shell do (the required-argument form above
# all), and the Dockerfile needs only these forms.
_REFERENCE = re.compile(r"\$(\w+)|\$\{(\w+)(?:(:?)([-+?])([^}]*))?\}")


def expand(text: str, args: Mapping[str, str | None]) -> str:
    """``$NAME``, ``${NAME}``, ``${NAME:-default}``, ``${NAME:+alternative}`` and
    ``${NAME:?message}`` (also without the colon) for the build arguments in ``args``
    (None: declared but not given); anything else is left for the image's environment.
    A required argument that is missing raises ValueError, worded as the shell words it."""

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in args:
            return match[0]
        value = args[name]
        colon, operator, word = match[3], match[4], match[5] or ""
        missing = value is None or (colon == ":" and not value)
        if operator == "-":
            return word if missing else str(value)
        if operator == "+":
            return "" if missing else word
        if operator == "?" and missing:
            raise ValueError(f"{name}: {word or 'is not allowed to be unset'}")
        return value or ""

    return _REFERENCE.sub(replace, text)


def uv_sync_commands(stage: Stage) -> list[list[str]]:
    """Each RUN of a stage as argv, without BuildKit's --mount options."""
    commands = []
    for args in stage.all("RUN"):
        words = [w for w in shlex.split(args) if not w.startswith("--mount=")]
        commands.append(words)
    return commands


class DockerIgnore:
    """`.dockerignore` as BuildKit reads it: last matching pattern wins, `!` re-includes,
    and a pattern that matches a directory matches everything under it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line.removeprefix("!").strip("/")
            self.rules.append((include, re.compile(_glob_to_regex(pattern))))

    def may_include_below(self, directory: str) -> bool:
        """Whether a `!` pattern could let in something under an excluded directory."""
        parts = directory.split("/")
        for include, regex in self.rules:
            if not include:
                continue
            pattern = regex.pattern
            if ".*" in pattern:
                return True
            depth = pattern.count("/") + 1
            if depth > len(parts) and re.match(
                "/".join(pattern.split("/")[: len(parts)]) + "$", directory
            ):
                return True
        return False

    def excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded


def _glob_to_regex(pattern: str) -> str:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return out


@functools.cache
def context_files(context: Path) -> list[str]:
    """Every file of the build context (relative paths) that `.dockerignore` lets in."""
    ignore = DockerIgnore((context / ".dockerignore").read_text())
    files = []
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = Path(dirpath).relative_to(context).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        dirnames[:] = [
            d
            for d in dirnames
            if not ignore.excluded(prefix + d) or ignore.may_include_below(prefix + d)
        ]
        for name in filenames:
            relative = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not ignore.excluded(relative):
                files.append(relative)
    return sorted(files)


@dataclass
class Replay:
    """The outcome of replaying a Dockerfile's build stage under ``root``."""

    root: Path
    runtime: Stage

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    @property
    def workdir(self) -> Path:
        return self.path(self.runtime.workdir())

    def runtime_env(self) -> dict[str, str]:
        """The runtime stage's environment, its container paths mapped under root."""
        env = self.runtime.env()
        env["PATH"] = ":".join(
            str(self.path(p)) if p.startswith("/app") else p for p in env["PATH"].split(":")
        )
        return env

    def executable(self, name: str) -> Path:
        for directory in self.runtime_env()["PATH"].split(":"):
            if (candidate := Path(directory) / name).exists():
                return candidate
        raise FileNotFoundError(name)


def replay_build(dockerfile: Dockerfile, root: Path, *, uv: str) -> Replay:
    """Run the build stage into ``root`` the way the image build does; keep what the
    runtime stage copies from it, delete the rest."""
    build = dockerfile.stage("build")
    context_all = context_files(ROOT)
    env: dict[str, str] = {}
    workdir = "/"
    for keyword, args in build.instructions:
        if keyword == "ENV":
            env.update(Stage("", "", [("ENV", args)]).env({}))
        elif keyword == "WORKDIR":
            workdir = args
        elif keyword == "COPY":
            words = args.split()
            if any(w.startswith("--from=") for w in words):
                continue  # the uv binary: this machine's uv stands in for it
            *sources, dest = words
            _copy(sources, dest, workdir, root, context_all)
        elif keyword == "RUN":
            (argv,) = uv_sync_commands(Stage("", "", [("RUN", args)]))
            assert argv[:2] == ["uv", "sync"], f"the build stage runs only `uv sync`: {argv}"
            run_env = {
                k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))
            }
            run_env.update(env)
            run_env["UV_PROJECT_ENVIRONMENT"] = str(
                root / env["UV_PROJECT_ENVIRONMENT"].lstrip("/")
            )
            subprocess.run(
                [uv, *argv[1:]],
                cwd=root / workdir.lstrip("/"),
                env=run_env,
                check=True,
                capture_output=True,
                timeout=300,
            )
        elif keyword not in ("ARG",):
            raise AssertionError(f"the replay does not know {keyword} (build stage)")
    runtime = dockerfile.final
    kept = []
    for args in runtime.all("COPY"):
        words = args.split()
        assert "--from=build" in words, (
            f"the runtime stage copies only from the build stage: {args}"
        )
        source, dest = [w for w in words if not w.startswith("--")]
        assert source == dest, (
            "the runtime keeps the build stage's paths (the venv is not relocatable)"
        )
        kept.append(Path(source.lstrip("/")))
    _prune(root, kept)
    return Replay(root, runtime)


def _copy(sources: list[str], dest: str, workdir: str, root: Path, context: list[str]) -> None:
    target = Path(dest if dest.startswith("/") else f"{workdir}/{dest}")
    for source in sources:
        matched = [f for f in context if f == source or f.startswith(source.rstrip("/") + "/")]
        assert matched, f"COPY {source}: nothing in the build context (see .dockerignore)"
        for relative in matched:
            if relative == source:  # a file: into the destination directory
                destination = target / Path(relative).name if dest.endswith("/") else target
            else:  # a directory: its contents
                destination = target / Path(relative).relative_to(source)
            out = root / destination.as_posix().lstrip("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, out)


def _prune(root: Path, kept: list[Path]) -> None:
    """Delete everything under root except the kept paths (and the folders leading to them)."""
    for dirpath, dirnames, filenames in os.walk(root):
        relative = Path(dirpath).relative_to(root)
        for name in filenames:
            path = relative / name
            if not any(k == path or k in path.parents for k in kept):
                (root / path).unlink()
        descend = []
        for name in dirnames:
            path = relative / name
            if any(k == path or k in path.parents for k in kept):
                continue  # kept whole
            if any(path in k.parents for k in kept):
                descend.append(name)
            else:
                shutil.rmtree(root / path)
        dirnames[:] = descend
