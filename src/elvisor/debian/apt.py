"""Debian's arm64 packages through apt, with an apt state of our own.

The system's apt state is never touched: a private sources file, lists, cache and an empty
dpkg status live under elvisor's cache directory and are passed to apt-get with -o options.
The package server is never named here: the mirror URI is taken from the machine's own
configured Debian sources (or given by the user with --mirror).
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from elvisor.errors import UserError

DEBIAN_SUITES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
    | {"oldoldstable", "oldstable", "stable", "testing", "unstable"}
)
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
LISTS_MAX_AGE = 24 * 3600


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry of the system's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # the file it came from


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        """The name `apt-get download` gives the .deb."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


def _parse_one_line(path: Path) -> list[AptSource]:
    sources = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [ options ]
        fields = line.split()
        if len(fields) >= 3:
            sources.append(AptSource(fields[1], (fields[2],), tuple(fields[3:]), str(path)))
    return sources


def _parse_deb822(path: Path) -> list[AptSource]:
    sources = []
    for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
            elif ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                    str(path),
                )
            )
    return sources


def system_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """The `deb` entries of the machine's apt configuration, in apt's reading order."""
    files = [etc_apt / "sources.list"]
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    sources: list[AptSource] = []
    for path in files:
        if not path.is_file():
            continue
        parse = _parse_deb822 if path.suffix == ".sources" else _parse_one_line
        sources += parse(path)
    return sources


def debian_mirror(sources: list[AptSource]) -> AptSource:
    """The first configured Debian archive (a plain Debian suite, component main)."""
    for source in sources:
        if "main" in source.components and any(s in DEBIAN_SUITES for s in source.suites):
            return source
    tried = ", ".join(sorted({f"{s.uri} ({s.origin})" for s in sources})) or "none"
    raise UserError(
        "no Debian package source is configured on this machine "
        f"(apt sources tried: {tried}); pass --mirror URI with a Debian mirror's address"
    )


def require_tools() -> None:
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg-deb") if not shutil.which(tool)]
    if missing:
        raise UserError(
            f"the lab is built from Debian packages, and this system lacks {', '.join(missing)}: "
            "run elvisor lab on Debian (or Ubuntu with --mirror), or install apt and dpkg"
        )


def extract(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files under `dest` (dpkg-deb -x: no scripts run, nothing installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def debian_workspace(root: Path, suite: str, mirror: str | None = None) -> AptWorkspace:
    """A private apt state for `suite`, its lists fetched (or less than a day old)."""
    require_tools()
    if mirror:
        workspace = AptWorkspace(root, suite, mirror, "given with --mirror")
    else:
        source = debian_mirror(system_sources())
        workspace = AptWorkspace(root, suite, source.uri, f"the apt source in {source.origin}")
    workspace.update()
    return workspace


class AptWorkspace:
    """A private apt state for one suite of Debian's arm64 packages."""

    def __init__(
        self, root: Path, suite: str, mirror: str, origin: str, arch: str = "arm64"
    ) -> None:
        self.root = root
        self.suite = suite
        self.mirror = mirror.rstrip("/")
        self.origin = origin  # where the mirror's address came from, for messages
        self.arch = arch
        self._setup()

    def _setup(self) -> None:
        for sub in ("sources", "preferences", "lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not DEBIAN_KEYRING.exists():
            raise UserError(
                f"{DEBIAN_KEYRING} is missing: install the debian-archive-keyring package"
            )
        sources = (
            "Types: deb\n"
            f"URIs: {self.mirror}\n"
            f"Suites: {self.suite}\n"
            "Components: main\n"
            f"Architectures: {self.arch}\n"
            f"Signed-By: {DEBIAN_KEYRING}\n"
        )
        path = self.root / "sources" / "elvisor.sources"
        if not path.exists() or path.read_text() != sources:
            path.write_text(sources)
            (self.root / "lists" / "stamp").unlink(missing_ok=True)
        (self.root / "status").touch()

    def options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": self.root / "sources",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": self.root / "preferences",
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": self.root / "status",
            "Dir::Cache": self.root / "cache",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "APT::Sandbox::User": getpass.getuser(),
            "Debug::NoLocking": "true",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def _apt(self, tool: str, *args: str, quiet: bool = True) -> str:
        cmd = [tool, *self.options(), *args]
        result = subprocess.run(
            cmd,
            stdout=subprocess.PIPE if quiet else sys.stderr,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()
            last = detail[-1] if detail else f"exit status {result.returncode}"
            raise UserError(
                f"apt-get could not get Debian {self.suite} arm64 packages from {self.mirror} "
                f"({self.origin}): {last}; check the network, or pass --mirror URI"
            )
        return result.stdout or ""

    def update(self, force: bool = False) -> None:
        """Fetch the package lists, unless they are less than a day old."""
        stamp = self.root / "lists" / "stamp"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        print(
            f"elvisor: fetching Debian {self.suite} arm64 package lists from {self.mirror}",
            file=sys.stderr,
        )
        self._apt("apt-get", "update", "-q")
        stamp.touch()

    def show(self, name: str) -> dict[str, str]:
        """The candidate version's control fields of a package."""
        text = self._apt("apt-cache", "show", "--no-all-versions", name)
        fields: dict[str, str] = {}
        for line in text.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Version" not in fields:
            raise UserError(f"Debian {self.suite} has no arm64 package {name}")
        return fields

    def candidate(self, name: str) -> Package:
        fields = self.show(name)
        return Package(fields["Package"], fields["Version"], fields["Architecture"])

    def kernel(self, metapackage: str) -> Package:
        """The kernel package a metapackage (linux-image-arm64, ...) currently depends on."""
        depends = self.show(metapackage).get("Depends", "")
        name = depends.split(",")[0].split()[0] if depends else ""
        if not name.startswith("linux-image-"):
            raise UserError(f"Debian {self.suite}'s {metapackage} names no arm64 kernel")
        return self.candidate(name)

    def resolve(self, names: list[str]) -> list[Package]:
        """The packages (with their dependencies) that installing `names` would take."""
        out = self._apt("apt-get", "install", "--simulate", "-q", *names)
        found = re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", out, re.MULTILINE)
        return sorted(Package(name, version, arch) for name, version, arch in found)

    def download(self, packages: list[Package], dest: Path) -> list[Path]:
        """Download the .deb files not yet in `dest`; returns the paths of all of them."""
        dest.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if not (dest / p.filename).exists()]
        if missing:
            print(f"elvisor: downloading {len(missing)} Debian packages", file=sys.stderr)
            cmd = ["apt-get", *self.options(), "download", *map(str, missing)]
            result = subprocess.run(cmd, cwd=dest, stdout=sys.stderr, check=False)
            if result.returncode != 0:
                raise UserError(
                    f"apt-get could not download Debian {self.suite} arm64 packages from "
                    f"{self.mirror} ({self.origin}); check the network, or pass --mirror URI"
                )
        paths = [dest / p.filename for p in packages]
        for path in paths:
            if not path.exists():
                raise UserError(f"apt-get did not produce {path.name}")
        return paths
