"""The service image, built on this machine without a container registry
(deploy/container/build.sh: a Debian base from Debian's mirror, then the Containerfile on top),
and a service started from it against the real Postgres and Kafka.

Opt-in (marker ``image``, deselected by default in pyproject.toml): ``make test-image``. A cold
build (the base image from scratch) takes minutes, so it is not part of ``make test``; a warm one
rebuilds only the layers the code touches. It needs root and buildah, and fails (never skips)
when either is missing.

The image runs with ``buildah run --isolation chroot``: no OCI runtime (crun, runc) is installed
here. Chroot isolation shares the host's network and process table, so the service binds its
operational port on the host and its pid is a host pid, which is how the test stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.stack import free_port
from wallet_cli.delegation import SERVICES
from wallet_stack import KAFKA, REPO, die_with_parent

pytestmark = [pytest.mark.e2e, pytest.mark.image]

BASE_IMAGE = "localhost/wallet-base:bookworm"
IMAGE = "localhost/quadcode-wallet:dev"
SERVICE_UID = 10001  # the Containerfile's USER
BUILD_TIMEOUT = 900  # a cold build took about 5.5 minutes on this machine (docs/deployment.md)


def buildah(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A buildah command with chroot isolation; raises with its output when it fails."""
    done = subprocess.run(
        ["buildah", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"BUILDAH_ISOLATION": "chroot"},
    )
    if done.returncode != 0:
        pytest.fail(f"buildah {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Builds the image (or reuses the base and cached layers) and returns its Docker config."""
    if os.geteuid() != 0:
        pytest.fail("the image build needs root (buildah mount, debootstrap)")
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("wb") as out:
        built = subprocess.run(
            ["bash", str(REPO / "deploy" / "container" / "build.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            env=os.environ | {"BASE_IMAGE": BASE_IMAGE, "IMAGE": IMAGE},
        )
    if built.returncode != 0:
        pytest.fail(f"build.sh exited {built.returncode}:\n{log.read_text()[-4000:]}")
    (inspected,) = [json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)]
    config: dict[str, Any] = inspected["Docker"]["config"]
    return config


@contextmanager
def working_container() -> Iterator[str]:
    """A working container of the image (an overlay over its layers), removed afterwards."""
    name = f"wallet-test-{uuid.uuid4().hex[:10]}"
    buildah("from", "--pull=never", "--name", name, IMAGE)
    try:
        yield name
    finally:
        buildah("rm", name)


@pytest.fixture
def container(image_config: dict[str, Any]) -> Iterator[str]:
    with working_container() as name:
        yield name


def run_in(container: str, *command: str, env: dict[str, str] | None = None) -> str:
    """Runs a command to completion in the container, as the image's user; returns stdout."""
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return buildah("run", *flags, container, "--", *command).stdout


def process_group(pgid: int) -> dict[int, int]:
    """Pid -> parent pid of every live process in a process group (from /proc)."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces: the fields after its ')' are fixed.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members[int(entry.name)] = int(fields[1])
    return members


def service_pid(runner: subprocess.Popen[bytes]) -> int:
    """The service's own pid under `buildah run` (buildah, then buildah-chroot-runtime, then
    buildah-chroot-exec, then the service): the one process of the group with no child in it.
    Signalling buildah itself would kill the service rather than ask it to stop."""
    group = process_group(runner.pid)
    leaves = set(group) - set(group.values())
    assert len(leaves) == 1, group
    return leaves.pop()


def ready_status(port: int) -> int | None:
    """The status of /ready on the port, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_image_runs_the_wallet_command_as_its_non_root_user(
    image_config: dict[str, Any], container: str
) -> None:
    assert image_config["Entrypoint"] == ["wallet"]
    assert image_config["User"] == f"{SERVICE_UID}:{SERVICE_UID}"
    # No --user given: the image's own USER applies.
    assert run_in(container, "id", "-u").strip() == str(SERVICE_UID)
    usage = run_in(container, *image_config["Entrypoint"], "run", "--help")
    # click wraps the choices, {accounting|edge|...}, across lines.
    choices = "".join(usage.split("{", 1)[1].split("}", 1)[0].split()).split("|")
    assert sorted(choices) == sorted(SERVICES)


def test_the_build_bakes_none_of_the_hosts_trust_files_in(container: str) -> None:
    """pip in the build trusts the host's CA bundle through build-time mounts; what stays in the
    image of them is at most the empty mount points, and Debian's own bundle is untouched."""
    run_in(container, "sh", "-c", "test ! -s /etc/pip.conf")
    run_in(container, "sh", "-c", "test ! -s /run/wallet-build/ca-bundle.crt")
    # The authorities this host adds to Debian's list (here: its egress proxy's) are not in the
    # image's list.
    image_bundle = "".join(run_in(container, "cat", "/etc/ssl/certs/ca-certificates.crt").split())
    assert "BEGINCERTIFICATE" in image_bundle
    for local in Path("/usr/local/share/ca-certificates").rglob("*.crt"):
        body = "".join(local.read_text().split("-----")[2].split())
        assert body not in image_bundle, local


def test_the_ledger_starts_from_the_image_is_ready_and_stops_cleanly_on_sigterm(
    image_config: dict[str, Any],
    container: str,
    database: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    ops_port = free_port()
    env = {
        "WALLET_PG_DSN": database,
        "WALLET_KAFKA_BOOTSTRAP": KAFKA,
        "WALLET_TOPIC_PREFIX": topic_prefix,
        "WALLET_LEDGER_PORT": str(ops_port),
        "WALLET_ENVIRONMENT": "sandbox",
    }
    flags = [f"--env={k}={v}" for k, v in env.items()]
    command = [*image_config["Entrypoint"], "run", "ledger"]
    log_path = tmp_path / "ledger.log"
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            ["buildah", "run", "--isolation", "chroot", *flags, container, "--", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: how its pid is found
            preexec_fn=die_with_parent,
        )
    try:
        deadline = time.monotonic() + 90
        while ready_status(ops_port) != 200:
            if runner.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ledger not ready (exit {runner.poll()}): {log_path.read_text()}")
            time.sleep(0.3)

        pid = service_pid(runner)
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{SERVICE_UID}\t" in status
        # It runs inside the image's file system (chrooted), not the host's Python.
        assert os.readlink(f"/proc/{pid}/root") != "/"

        # The image's HEALTHCHECK command, run as the image declares it, passes against the
        # service and fails against a port where nothing listens.
        healthcheck = image_config["Healthcheck"]["Test"]
        assert healthcheck[0] == "CMD"
        with working_container() as probe:
            run_in(probe, *healthcheck[1:], env={"HEALTHCHECK_PORT": str(ops_port)})
            nobody = f"--env=HEALTHCHECK_PORT={free_port()}"
            refused = subprocess.run(
                ["buildah", "run", "--isolation", "chroot", nobody, probe, "--", *healthcheck[1:]],
                capture_output=True,
                timeout=60,
            )
            assert refused.returncode != 0

        os.kill(pid, signal.SIGTERM)
        assert runner.wait(30) == 0, log_path.read_text()
        assert ready_status(ops_port) is None
    finally:
        if runner.poll() is None:
            runner.kill()  # buildah tears the container's processes down with it
            runner.wait(10)
