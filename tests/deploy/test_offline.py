"""The offline stand-ins (deploy/offline), without an engine: one per image variable of compose.yaml, each under
the project's own name and never an official one, built only from the imported Debian root filesystem (or from
scratch), whose sources are this machine's configured Debian mirror and whose CA bundle is the host's. The
images themselves are built and run by `make test-compose` where no registry answers (the database stand-in's
first start with passwords holding quotes and backslashes included)."""

from __future__ import annotations

import re
import shutil
import subprocess

from deploy.offline import images


def test_there_is_one_stand_in_per_image_variable_of_compose() -> None:
    assert {s.variable for s in images.STAND_INS} == set(images.official_images())
    assert len(images.STAND_INS) == len({s.variable for s in images.STAND_INS})


def test_a_stand_in_never_carries_an_official_name() -> None:
    official = images.official_images()
    chosen = images.stand_in_images()
    for variable, name in chosen.items():
        assert name.startswith(images.PREFIX), name
        assert name.rpartition(":")[0] != official[variable].rpartition(":")[0]
        assert name not in official.values()
    # uv is the same binary at the same version; python is the same minor version.
    assert chosen["UV_IMAGE"].rpartition(":")[2] == official["UV_IMAGE"].rpartition(":")[2]
    assert official["PYTHON_IMAGE"].split(":")[1].startswith(chosen["PYTHON_IMAGE"].rpartition(":")[2] + "-")


def test_every_stand_in_builds_from_the_imported_debian_or_from_scratch() -> None:
    for s in images.STAND_INS:
        dockerfile = (images.HERE / s.dockerfile).read_text(encoding="utf-8")
        bases = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
        assert bases in ([images.BASE], ["scratch"]), (s.dockerfile, bases)


def test_the_root_filesystem_comes_from_this_machines_debian_mirror_with_the_hosts_cas() -> None:
    sources = images.debian_sources()
    assert [line.split()[2] for line in sources] == ["bookworm", "bookworm-updates", "bookworm-security"]
    if shutil.which("apt-get"):
        configured = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(REPO_URI)", "Origin: Debian"], capture_output=True, text=True
        ).stdout.split()
        assert {line.split()[1] + "/" for line in sources} <= set(configured)
    argv = images.mmdebstrap_argv(sources)
    assert "--variant=minbase" in argv
    assert f"--customize-hook=upload {images.HOST_CA_BUNDLE} /etc/ssl/certs/ca-certificates.crt" in argv
    assert argv[-len(sources) - 2 :] == ["bookworm", "-", *sources]
