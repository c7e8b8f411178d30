#!/usr/bin/env python3
"""`make mutate`: mutation testing (mutmut 3) of the admission decision path, by the unit tests.

Line coverage says a line ran, not that a test would notice it being wrong (issue 18: 8 of 20
planted bugs survived the whole suite). mutmut changes one thing at a time (`<` to `<=`, `any`
to `all`, a string, a constant) and runs the unit tests that reach the changed function; a
mutant no test fails on is a bug the suite would let through.

What is mutated is `[tool.mutmut]` in pyproject.toml (`only_mutate`): the rules, the decision,
the pod templates and reference parsing, every function of each; of the two large registry
modules only the functions that verify digests (`FUNCTIONS` below). The tests are tests/unit
only: in-process, no Docker, no registry, no cluster.

Prints `mutation score: K/N killed` (timeouts count as killed, as mutmut counts them), then each
mutant that was not killed with its file:line and its diff, and, for the survivors known to be
equivalent (no test can tell them from the original), why. Exits 1 below `--min-score`, 2 when
the run cannot be made (mutmut, git or the configuration failed). mutmut first runs tests/unit
twice in one process (to learn which tests reach which function, then a clean run), so every
unit test must pass, and pass again in the same process (no one-shot iterator in a parametrize).

    .venv/bin/python hack/mutate.py [--min-score 90] [--changed-since origin/main]
                                    [--max-mutants N] [--only GLOB] [--max-children N]

`mutants/` is made afresh each run (mutmut copies the package there once and never refreshes
the files it does not mutate, so a kept copy can test yesterday's code) and left in place
afterwards, so `mutmut browse` / `mutmut show NAME` / `mutmut run NAME` work on the results.
This module is also a pytest plugin of those runs (`pytest_runtest_setup` below).

Subsets, for CI: `--changed-since REF` keeps the functions this branch changed (since the
merge base with REF, uncommitted changes too; every function of a file whose module-level code
changed), `--max-mutants N` samples N of the selected
mutants (`--seed` picks which), `--only GLOB` filters by mutmut name, `--or-sample N` samples
N of all mutants when nothing in scope changed, and `--max-unexplained 0` fails the run on any
survivor that is not a known equivalent (a sample's score alone is noisy; an unexplained
survivor is not). CI (`make mutate-ci`, a step of `.ci/run`) runs what the last commit changed,
at most 150 mutants, or a 60-mutant sample seeded by the commit. A run costs about 45 s
of set-up (copy, generation, one run of tests/unit to learn which tests reach which function)
plus, on 2 cores, about 3 mutants a second, a survivor of the reference parser ~13 s (it runs
every test that parses a reference).
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import fnmatch
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
LOG = MUTANTS / "mutate.log"

# Of these files only the named functions (`name` or `Class.method`) are run and scored: they
# are where a digest is checked (the body hashed, the header compared, the blob streamed and
# hashed, a pushed manifest's answer compared). The rest of the two modules is transport and
# parsing, tested elsewhere; mutating all of it would triple the run for no digest coverage.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "webhook/registry/client.py": (
        "_verify",
        "RegistryClient._fetch_manifest",
        "RegistryClient._fetch_config",
    ),
    "webhook/registry/blobs.py": ("BlobStore.download", "BlobStore.put_manifest"),
}

# mutmut's verdicts (`mutmut results`) that count as killed: a test failed, or the mutant made
# a test run so long it was stopped (an endless loop is noticed, as mutmut's own score has it).
KILLED = frozenset({"killed", "timeout", "caught by type check"})

# mutmut's name of the method `m` of class `C` is `xǁCǁm`, of the function `f` it is `x_f`.
SEP = "ǁ"


@dataclass(frozen=True)
class Equivalent:
    """Survivors no test can kill: the mutated code behaves exactly as the original.

    Matched by file, function and what changed: a removed line holding `before` and an added
    one holding one of `after` (fragments of the stripped lines), not by mutmut's number, which
    shifts whenever the function changes."""

    path: str
    function: str
    before: str
    after: tuple[str, ...]
    reason: str


_FIRST_PIECE = "only the first piece of the split is read, and every maxsplit leaves it the same"
_LAST_PIECE = "only the last piece of the rsplit is read, and every maxsplit leaves it the same"
_HEADER_CASE = "HTTP header names are case-insensitive, and so are httpx.Headers"
_METHOD = "httpx upper-cases the method, and `once` (not the method) decides the retries"
_IN_SET = (
    "`_approved` only asks whether an allow-list entry's digest (a non-empty string) is in the "
    "set: an added None or '' never matches"
)
_READERS = "`_may_read` only asks whether the key is in `_readers`, never its value"


def _same(path: str, function: str, before: str, *after: str, why: str) -> Equivalent:
    return Equivalent(path, function, before, after, why)


DECISION = "webhook/admission/decision.py"
WORKLOADS = "webhook/policy/workloads.py"
BASE = "webhook/policy/rules/allowed_base.py"
ENTRY = "webhook/policy/rules/single_entrypoint.py"
SIZE = "webhook/policy/rules/size_budget.py"
REFERENCE = "webhook/registry/reference.py"
CLIENT = "webhook/registry/client.py"
BLOBS = "webhook/registry/blobs.py"

# Each read against the code. They survive (killing one would take a pragma in the code); a
# change to one of these lines makes its entry stop matching, and the survivor is listed as one
# to look at again.
EQUIVALENT: tuple[Equivalent, ...] = (
    _same(
        DECISION,
        "problems_of",
        "MODE_RANK[violation.at_most] < MODE_RANK[mode]",
        "MODE_RANK[violation.at_most] <= MODE_RANK[mode]",
        why="at equal rank `at_most` is the mode itself (one rank per mode): a no-op",
    ),
    _same(
        DECISION,
        "decide",
        'f.result.verdict == "pass"',
        'f.result.verdict == "XXpassXX"',
        'f.result.verdict == "PASS"',
        why="the shortcut only saves work: a `pass` result has no violation and no error (the "
        "Checker says `fail` when there is one), so the full path answers the same allowed "
        "response, without warnings",
    ),
    _same(
        WORKLOADS,
        "covered_by_owner",
        'kind, owner_kind = str(obj.get("kind", "")), str(owner.get("kind", ""))',
        '"kind", None)',
        '"kind", )',
        '"kind", "XXXX")',
        why="a missing kind read as '', 'None' or 'XXXX' is neither a key of CONTROLLER_KINDS "
        "nor a kind any controller makes: each answers False",
    ),
    _same(
        WORKLOADS,
        "covered_by_owner",
        'c.image.split("@", 1)[0]',
        'c.image.split("@", )[0]',
        'c.image.split("@", 2)[0]',
        why=_FIRST_PIECE,
    ),
    _same(
        BASE,
        "check",
        "{checked.digest} if checked.digest else set()",
        "{checked.digest} if (checked.digest) or True else set()",
        why=_IN_SET,
    ),
    _same(
        BASE,
        "_claimed_digests",
        "digests = {claim.digest} if claim.digest else set()",
        "{claim.digest} if (claim.digest) or True else set()",
        why=_IN_SET,
    ),
    _same(
        BASE,
        "_claimed_digests",
        "({named} if named else set())",
        "({named} if (named) or True else set())",
        why=_IN_SET,
    ),
    _same(
        BASE,
        "_by_layers",
        '"diff_ids", verified=True)',
        '"diff_ids", )',
        why="True is BaseFact.verified's default",
    ),
    _same(
        BASE,
        "_explicit_tag",
        'return ":" in entry.split("@", 1)[0].rsplit("/", 1)[-1]',
        'entry.split("@", )[0]',
        'entry.rsplit("@", 1)[0]',
        'entry.split("@", 2)[0]',
        '.rsplit("/", 2)[-1]',
        '.rsplit("/", )[-1]',
        '.split("/", 1)[-1]',
        why="the entry parsed as a reference just before: one `@` at most, and a `:` only in "
        "the host (first component) or the tag (last): each of these splits sees a tag's colon "
        "exactly when the original does",
    ),
    _same(
        ENTRY,
        "parse_shell",
        "command = False",
        "command = None",
        why="only its truth is read",
    ),
    _same(
        ENTRY,
        "shell_script",
        "return call.script if call is not None else None",
        "(call is not None) or True",
        why="parse_shell is None only for an argv[0] that is no shell, returned for just above",
    ),
    _same(
        ENTRY,
        "_env_command",
        'if word == "-":',
        'if word == "XX-XX":',
        why="a lone `-` then reaches the option parser, which finds no letter in it and moves "
        "on to the next word, as the `continue` does",
    ),
    _same(
        SIZE,
        "human",
        'raise AssertionError("unreachable")',
        "raise AssertionError(",
        why="unreachable: the loop returns at TB at the latest",
    ),
    _same(
        REFERENCE,
        "Reference._parse_uncached",
        'last = text.rsplit("/", 1)[-1]',
        'last = text.rsplit("/", )[-1]',
        'last = text.rsplit("/", 2)[-1]',
        why=_LAST_PIECE,
    ),
    _same(
        REFERENCE,
        "_split_domain",
        "missing repository name",
        "raise InvalidReference(None)",
        why="unreachable: a registry host needs a non-empty rest, and without one the registry "
        "is Docker Hub, whose bare names become `library/…`: the repository is never empty",
    ),
    _same(
        REFERENCE,
        "normalize_host",
        'host = host.split("/", 1)[0]',
        'host = host.split("/", )[0]',
        'host = host.split("/", 2)[0]',
        why=_FIRST_PIECE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        'headers={"Accept": mt.ACCEPT}',
        'headers={"accept": mt.ACCEPT}',
        'headers={"ACCEPT": mt.ACCEPT}',
        why=_HEADER_CASE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        "limit=self.settings.max_manifest_bytes,",
        "limit=None,",
        ")",
        why="without a limit the transport caps the body at max_manifest_bytes all the same",
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        'reply.headers.get("docker-content-digest")',
        'reply.headers.get("DOCKER-CONTENT-DIGEST")',
        why=_HEADER_CASE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        'header.split(":", 1)[0] == digest.split(":", 1)[0]',
        'header.split(":", )[0] == digest',
        'header.split(":", 2)[0] == digest',
        why=_FIRST_PIECE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        'header.split(":", 1)[0] == digest.split(":", 1)[0]',
        '== digest.split(":", )[0]',
        '== digest.rsplit(":", 1)[0]',
        '== digest.split(":", 2)[0]',
        why="`digest` is `_verify`'s own `algorithm:hex`, one colon: every split reads the "
        "algorithm",
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        'reply.headers.get("content-type")',
        'reply.headers.get("CONTENT-TYPE")',
        why=_HEADER_CASE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_manifest",
        "self._readers[hashed_key(*_reader(ref, keyring))] = True",
        "] = False",
        "] = None",
        why=_READERS,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_config",
        'headers={"Accept": f"{mt.OCI_CONFIG}',
        'headers={"accept": f"{mt.OCI_CONFIG}',
        'headers={"ACCEPT": f"{mt.OCI_CONFIG}',
        why=_HEADER_CASE,
    ),
    _same(
        CLIENT,
        "RegistryClient._fetch_config",
        "self._readers[hashed_key(*_reader(ref, keyring))] = True",
        "] = False",
        "] = None",
        why=_READERS,
    ),
    _same(
        CLIENT,
        "_verify",
        'algorithm = expected.split(":", 1)[0]',
        'expected.split(":", )[0]',
        'expected.split(":", 2)[0]',
        why=_FIRST_PIECE,
    ),
    _same(
        BLOBS,
        "BlobStore.download",
        'algorithm = digest.split(":", 1)[0]',
        'digest.split(":", )[0]',
        'digest.split(":", 2)[0]',
        why=_FIRST_PIECE,
    ),
    _same(
        BLOBS,
        "BlobStore.download",
        'got = ""',
        "got = None",
        'got = "XXXX"',
        why="set before it is read: a 2xx always streams through `into_file`, which sets it, "
        "and any other answer raises at `check`",
    ),
    _same(
        BLOBS,
        "BlobStore.download",
        "size = 0",
        "size = None",
        "size = 1",
        why="set before it is read: `into_file` starts from 0 itself",
    ),
    _same(
        BLOBS,
        "BlobStore.download",
        '"GET", repo, f"blobs/{digest}"',
        '"get", repo, f"blobs/{digest}"',
        why=_METHOD,
    ),
    _same(
        BLOBS,
        "BlobStore.download",
        "await asyncio.to_thread(dest.unlink, missing_ok=True)",
        "missing_ok=None)",
        "dest.unlink, )",
        "missing_ok=False)",
        why="the file exists here (`into_file` made it), so `missing_ok` is never consulted",
    ),
    _same(
        BLOBS,
        "BlobStore.put_manifest",
        '"PUT",',
        '"put",',
        why=_METHOD,
    ),
    _same(
        BLOBS,
        "BlobStore.put_manifest",
        'headers={"Content-Type": media_type}',
        'headers={"content-type": media_type}',
        'headers={"CONTENT-TYPE": media_type}',
        why=_HEADER_CASE,
    ),
    _same(
        BLOBS,
        "BlobStore.put_manifest",
        'reply.headers.get("docker-content-digest")',
        'reply.headers.get("DOCKER-CONTENT-DIGEST")',
        why=_HEADER_CASE,
    ),
)


@dataclass(frozen=True)
class Target:
    """A file to mutate, whole (`function` None) or one function of it (`Class.method`)."""

    path: str
    function: str | None = None

    @property
    def module(self) -> str:
        dotted = self.path.removesuffix(".py").replace("/", ".")
        return dotted.removesuffix(".__init__")

    def patterns(self) -> list[str]:
        """mutmut `run` name globs for this target's mutants (`*` also matches dots, so the
        function part starts with mutmut's `x_` / `xǁ` to stay inside the module)."""
        if self.function is None:
            return [f"{self.module}.x_*__mutmut_*", f"{self.module}.x{SEP}*__mutmut_*"]
        return [f"{self.module}.{mangled(self.function)}__mutmut_*"]

    def covers(self, name: str) -> bool:
        module, key = split_name(name)
        if module != self.module:
            return False
        return self.function is None or key == mangled(self.function)


@dataclass(frozen=True)
class Mutant:
    name: str
    status: str
    path: str
    function: str  # `name` or `Class.method`

    @property
    def killed(self) -> bool:
        return self.status in KILLED


@dataclass(frozen=True)
class Change:
    """Where a mutant differs from the original: 1-based line in the source file (None when
    the mutated file could not be matched to it) and the diff lines (`-old`, `+new`)."""

    line: int | None
    diff: list[str]


def mangled(function: str) -> str:
    cls, _, name = function.rpartition(".")
    return f"x{SEP}{cls}{SEP}{name}" if cls else f"x_{name}"


def unmangled(key: str) -> str:
    if key.startswith(f"x{SEP}"):
        _, cls, name = key.split(SEP)
        return f"{cls}.{name}"
    return key.removeprefix("x_")


def split_name(name: str) -> tuple[str, str]:
    """`webhook.a.b.x_f__mutmut_3` → (`webhook.a.b`, `x_f`)."""
    module, _, key = name.partition("__mutmut_")[0].rpartition(".")
    return module, key


def die(message: str) -> NoReturn:
    """Exit 2: the run could not be made (distinct from 1, a score below the minimum)."""
    print(f"mutate: {message}", file=sys.stderr)
    raise SystemExit(2)


# ---- what to mutate --------------------------------------------------------------------------


def targets_from_config() -> list[Target]:
    """The files `[tool.mutmut].only_mutate` names, each whole or cut down to `FUNCTIONS`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    paths = sorted(
        {
            str(p.relative_to(ROOT))
            for pattern in config["only_mutate"]
            for p in ROOT.glob(pattern)
            if p.suffix == ".py"
        }
    )
    targets: list[Target] = []
    for path in paths:
        functions = FUNCTIONS.get(path)
        if functions is None:
            targets.append(Target(path))
        else:
            targets += [Target(path, f) for f in functions]
    missing = sorted(set(FUNCTIONS) - set(paths))
    if missing:
        die(f"FUNCTIONS names files [tool.mutmut].only_mutate does not: {missing}")
    return targets


def functions_of(source: str) -> dict[str, str]:
    """What mutmut mutates (top-level functions, methods of top-level classes), name → a dump
    of its syntax tree: equal dumps behave the same whatever the formatting or comments. The
    key "" holds the rest of the module (constants, imports, class bodies): a change there can
    change what every function does."""
    found: dict[str, str] = {}
    rest: list[ast.stmt] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = ast.dump(node)
        elif isinstance(node, ast.ClassDef):
            others: list[ast.stmt] = []
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"{node.name}.{item.name}"] = ast.dump(item)
                else:
                    others.append(item)
            shell = copy.copy(node)  # the class without its methods
            shell.body = others
            rest.append(shell)
        else:
            rest.append(node)
    found[""] = ast.dump(ast.Module(rest, []))
    return found


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        die(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def changed_since(ref: str, targets: Sequence[Target]) -> list[Target]:
    """The parts of `targets` that differ from the merge base of `ref` and HEAD (committed or
    not): the functions changed or added, or every function of a file whose module-level code
    changed.

    Per function, not per file: mutmut runs and keys mutants by function, and a one-line fix in
    single_entrypoint.py should not cost its 478 mutants."""
    ref = git("merge-base", ref, "HEAD").strip()  # what this branch changed, not main's news
    changed = set(git("diff", "--name-only", ref, "--").split())
    changed |= set(git("ls-files", "--others", "--exclude-standard").split())
    picked: list[Target] = []
    for path in sorted({t.path for t in targets} & changed):
        mine = [t for t in targets if t.path == path]
        now = functions_of((ROOT / path).read_text())
        shown = subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True
        )
        before = functions_of(shown.stdout) if shown.returncode == 0 else {}
        if before.get("") != now[""]:
            picked += mine
            continue
        for function, tree in now.items():
            wanted = any(t.function in (None, function) for t in mine)
            if function and wanted and before.get(function) != tree:
                picked.append(Target(path, function))
    return picked


def list_mutants(targets: Sequence[Target]) -> list[str]:
    """The names mutmut will give the mutants of `targets`, without running anything.

    Only for a subset (`--changed-since`, `--max-mutants`, `--only`). This uses
    mutmut's own generator (not part of its CLI), so it is the part to check on a mutmut
    upgrade (a mismatch stops the run: `main` compares what ran with these)."""
    try:  # where mutmut >= 3.7 keeps it; 3.6 had it in mutmut.file_mutation, returning a tuple
        generator = importlib.import_module("mutmut.mutation.file_mutation")
    except ImportError:
        generator = importlib.import_module("mutmut.file_mutation")
    names: list[str] = []
    for path in sorted({t.path for t in targets}):
        result = generator.mutate_file_contents(path, (ROOT / path).read_text())
        listed: Sequence[str] = (
            result.mutant_names if hasattr(result, "mutant_names") else result[1]
        )
        module = Target(path).module
        names += [
            f"{module}.{n}" for n in listed if any(t.covers(f"{module}.{n}") for t in targets)
        ]
    return names


def sample(names: Sequence[str], limit: int, seed: str) -> list[str]:
    """At most `limit` names, picked by a hash of `seed` and the name: the same pick for the
    same seed (a rerun tests the same mutants), a different one for another (a nightly seed of
    the date covers every mutant over the nights)."""
    if len(names) <= limit:
        return list(names)
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"{seed}\0{n}".encode()).hexdigest())
    return sorted(ranked[:limit])


# ---- running mutmut ----------------------------------------------------------------------------


def mutmut_bin() -> str:
    """The `mutmut` next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "mutmut"
    found = str(here) if here.exists() else shutil.which("mutmut")
    if not found:
        die("mutmut is not installed (make venv installs the dev extras)")
    return found


STATUS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+)")


def run_mutmut(selectors: Sequence[str], max_children: int) -> None:
    """`mutmut run` on the mutants `selectors` name (globs or names), its output in LOG; a
    progress line every 30 s, so a long run is not silent."""
    shutil.rmtree(MUTANTS, ignore_errors=True)
    MUTANTS.mkdir()
    command = [mutmut_bin(), "run", "--max-children", str(max_children), *selectors]
    started = last = time.monotonic()
    with (
        LOG.open("wb") as log,
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc,
    ):
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            log.write(chunk)
            now = time.monotonic()
            if now - last >= 30:
                seen = STATUS.findall(chunk.decode(errors="replace"))
                if seen:
                    done, _, killed = seen[-1]  # mutmut's total counts unselected ones too
                    print(f"mutate: {done} tested, {killed} killed, {now - started:.0f} s")
                    sys.stdout.flush()
                    last = now
    if proc.returncode != 0:
        tail = LOG.read_bytes().decode(errors="replace").replace("\r", "\n").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        die(f"mutmut run failed (exit {proc.returncode}); log: {LOG}")


def results(selected: Iterable[Target], names: set[str] | None) -> list[Mutant]:
    """mutmut's verdicts (`mutmut results --all true`) of the selected mutants."""
    done = subprocess.run(
        [mutmut_bin(), "results", "--all", "true"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    targets = list(selected)
    mutants: list[Mutant] = []
    for line in done.stdout.splitlines():
        name, sep, status = line.strip().partition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        if names is not None and name not in names:
            continue
        target = next((t for t in targets if t.covers(name)), None)
        if target is None:
            continue
        mutants.append(Mutant(name, status, target.path, unmangled(split_name(name)[1])))
    return mutants


# ---- showing a mutant ------------------------------------------------------------------------


def _defs(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield f"{node.name}.{item.name}", item


class Sources:
    """Reads each file once: the source and mutmut's mutated copy, their functions by name."""

    def __init__(self) -> None:
        self._cache: dict[
            Path, tuple[list[str], dict[str, ast.FunctionDef | ast.AsyncFunctionDef]]
        ] = {}

    def functions(
        self, path: Path
    ) -> tuple[list[str], dict[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        if path not in self._cache:
            text = path.read_text()
            self._cache[path] = (text.splitlines(), dict(_defs(ast.parse(text))))
        return self._cache[path]

    def change(self, mutant: Mutant) -> Change:
        """The mutant's diff against the original, with the line it is at in the source.

        mutmut keeps an untouched copy of each mutated function (`…__mutmut_orig`) next to the
        mutants; both are the source's text (libcst keeps formatting), so the first differing
        line's offset from `def` is its offset in the source file."""
        key = split_name(mutant.name)[1]
        lines, defs = self.functions(MUTANTS / mutant.path)
        # A method's copies stay in its class: `C.xǁCǁm__mutmut_orig`.
        cls = f"{key.split(SEP)[1]}." if key.startswith(f"x{SEP}") else ""
        orig = defs.get(f"{cls}{key}__mutmut_orig")
        mutated = defs.get(cls + mutant.name.rpartition(".")[2])
        if orig is None or mutated is None:
            return Change(None, [f"(not found in {MUTANTS / mutant.path})"])
        a = _body(lines, orig)
        b = _body(lines, mutated)
        src_lines, src_defs = self.functions(ROOT / mutant.path)
        src = src_defs.get(mutant.function)
        base = src.lineno if src is not None and _body(src_lines, src) == a else None
        diff: list[str] = []
        line: int | None = None
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
            None, a, b, autojunk=False
        ).get_opcodes():
            if tag == "equal":
                continue
            if line is None and base is not None:
                line = base + i1
            diff += [f"-{x}" for x in a[i1:i2]] + [f"+{x}" for x in b[j1:j2]]
        return Change(line, diff)


def _body(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The function's lines from `def` on, the name in the `def` line blanked (the copies are
    named differently from the source and from each other)."""
    text = lines[node.lineno - 1 : node.end_lineno]
    text[0] = text[0].replace(node.name, "…", 1)
    return text


def equivalent(mutant: Mutant, change: Change) -> Equivalent | None:
    removed = [x[1:] for x in change.diff if x.startswith("-")]
    added = [x[1:] for x in change.diff if x.startswith("+")]
    for e in EQUIVALENT:
        if (e.path, e.function) != (mutant.path, mutant.function):
            continue
        if any(e.before in r for r in removed) and any(a in x for a in e.after for x in added):
            return e
    return None


# ---- inside mutmut's pytest runs --------------------------------------------------------------

# Memos whose answers outlive a test: `(module, function)`, each an lru_cache.
MEMOS = (("webhook.registry.reference", "_parse"),)


def pytest_runtest_setup(item: object) -> None:
    """Empty the memos before every test; a pytest hook, for this module is also a plugin of
    mutmut's pytest runs (`-p hack.mutate` in `[tool.mutmut].pytest_add_cli_args`).

    mutmut runs the whole suite once in its own process to learn which tests reach which
    function, then forks each mutant's run from that process. A reference parsed there stays
    in `Reference.parse`'s memo: in a mutant's run the memo answers with the original code's
    result and the mutant of `_parse_uncached` / `_split_domain` never runs (a false
    survivor), and only the first test to parse a string is tied to the parser at all."""
    del item
    for module, name in MEMOS:
        loaded = sys.modules.get(module)
        if loaded is not None:
            getattr(loaded, name).cache_clear()


# ---- main ------------------------------------------------------------------------------------


def select(args: argparse.Namespace) -> tuple[list[Target], list[str] | None]:
    """The targets to run, and the exact mutant names when a subset of them was asked for
    (named, so that a changed function without any mutant is an empty run, not mutmut's
    "nothing matches" error)."""
    targets = targets_from_config()
    if args.changed_since:
        changed = changed_since(args.changed_since, targets)
        if changed or args.or_sample is None:
            targets = changed
        else:  # nothing in scope changed: a sample of everything, so the gate still runs
            print(
                f"mutate: nothing in scope changed since {args.changed_since}; "
                f"sampling {args.or_sample} mutants of all targets (seed {args.seed!r})"
            )
            args.max_mutants = args.or_sample
    subset = args.changed_since or args.only or args.max_mutants is not None
    if not targets or not subset:
        return targets, None
    names = list_mutants(targets)
    if args.only:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in args.only)]
    if args.max_mutants is not None:
        names = sample(names, args.max_mutants, args.seed)
    return targets, names


def report(mutants: Sequence[Mutant], min_score: float, max_unexplained: int | None) -> int:
    killed = sum(m.killed for m in mutants)
    total = len(mutants)
    print(f"mutation score: {killed}/{total} killed")
    left = sorted((m for m in mutants if not m.killed), key=lambda m: (m.path, m.name))
    sources = Sources()
    shown = [(m, sources.change(m)) for m in left]
    shown.sort(key=lambda mc: (mc[0].path, mc[1].line or 0, mc[0].name))
    explained = 0
    for mutant, change in shown:
        where = f"{mutant.path}:{change.line}" if change.line else mutant.path
        print(f"\n{mutant.status}: {where} in {mutant.function} ({mutant.name})")
        for diff_line in change.diff:
            print(f"    {diff_line}")
        known = equivalent(mutant, change)
        if known is not None:
            explained += 1
            print(f"    equivalent: {known.reason}")
    score = 100.0 * killed / total if total else 100.0
    if left:
        print(
            f"\n{len(left)} not killed: {explained} equivalent (reason given), "
            f"{len(left) - explained} to kill with a test"
        )
    print(f"score {score:.1f}% (minimum {min_score:g}%)")
    unexplained = len(left) - explained
    if max_unexplained is not None and unexplained > max_unexplained:
        print(f"{unexplained} survivors without a reason (at most {max_unexplained} allowed)")
        return 1
    return 0 if score >= min_score else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--min-score", type=float, default=0.0, metavar="PCT",
        help="exit 1 when fewer than PCT%% of the mutants are killed",
    )  # fmt: skip
    parser.add_argument(
        "--changed-since", metavar="REF",
        help="only functions changed since the merge base with REF (origin/main), uncommitted too",
    )  # fmt: skip
    parser.add_argument(
        "--max-mutants", type=int, metavar="N",
        help="at most N mutants, a sample picked by --seed (for a time budget: ~3 mutants/s)",
    )  # fmt: skip
    parser.add_argument("--seed", default="", help="what picks the --max-mutants sample")
    parser.add_argument(
        "--or-sample", type=int, metavar="N",
        help="with --changed-since: when nothing in scope changed, sample N mutants of all targets",
    )  # fmt: skip
    parser.add_argument(
        "--max-unexplained", type=int, metavar="N",
        help="exit 1 when more than N survivors are not known equivalents (CI: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", metavar="GLOB",
        help="only mutants whose mutmut name matches (repeatable), e.g. 'webhook.admission.*'",
    )  # fmt: skip
    parser.add_argument(
        "--max-children", type=int, default=os.cpu_count() or 2,
        help="mutants tested in parallel (default: the CPU count)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # mutmut reads pyproject.toml from, and writes mutants/ to, the cwd
    if args.max_mutants is not None and args.max_mutants < 1:
        parser.error("--max-mutants must be at least 1")
    if args.or_sample is not None and (args.or_sample < 1 or not args.changed_since):
        parser.error("--or-sample needs --changed-since and must be at least 1")

    targets, names = select(args)
    if not targets or names == []:
        print("mutate: nothing to mutate (no mutant in scope matches the selection)")
        print("mutation score: 0/0 killed")
        return 0
    selectors = names if names is not None else [p for t in targets for p in t.patterns()]
    started = time.monotonic()
    print(f"mutate: mutmut run on {len(names) if names else len(targets)} "
          f"{'mutants' if names else 'targets'}; log: {LOG.relative_to(ROOT)}")  # fmt: skip
    sys.stdout.flush()
    run_mutmut(selectors, args.max_children)
    mutants = results(targets, set(names) if names is not None else None)
    if names is not None and len(mutants) != len(names):
        die(
            f"mutmut ran {len(mutants)} of the {len(names)} mutants listed: its naming no "
            "longer matches list_mutants (a mutmut upgrade?)"
        )
    print(f"mutate: {len(mutants)} mutants in {time.monotonic() - started:.0f} s")
    return report(mutants, args.min_score, args.max_unexplained)


if __name__ == "__main__":
    sys.exit(main())
